/* bcryptprimitives.dll for Wine 8.0, test time only: Rust's std (>= 1.78) imports ProcessPrng
 * from it, which Windows 10+ has and Wine 8.0 lacks. Forwards to RtlGenRandom (advapi32's
 * SystemFunction036), which Wine has. scripts/windows-test.sh builds it into the Wine
 * prefix's system32; it is never shipped. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* ProcessPrng (Windows 10+, documented in bcryptprimitives): fills data with len random bytes
 * and always returns TRUE. */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
	while (len > 0) {
		ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
		if (!SystemFunction036(data, chunk))
			return FALSE;
		data += chunk;
		len -= chunk;
	}
	return TRUE;
}
