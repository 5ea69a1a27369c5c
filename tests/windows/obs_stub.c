/* A stand-in obs.dll for the Windows load test (tests/windows/loader.c, run by
 * scripts/windows-test.sh under Wine). It exports every function of src/obs/obs.def: this file
 * implements the two the module calls while loading, obs_register_source_s (recorded) and
 * blog (printed and recorded); stubs.c, generated from obs.def by the script, holds the rest
 * as functions returning 0. stub_registered() hands the records to the loader. */
#include <obs-module.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static struct obs_source_info registered;
static size_t registered_size;
static int registrations;
static char last_log[1024];

__declspec(dllexport) void obs_register_source_s(const struct obs_source_info *info, size_t size)
{
	registrations++;
	registered_size = size;
	memset(&registered, 0, sizeof(registered));
	memcpy(&registered, info, size < sizeof(registered) ? size : sizeof(registered));
}

__declspec(dllexport) void blog(int log_level, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	vsnprintf(last_log, sizeof(last_log), format, args);
	va_end(args);
	printf("[blog %d] %s\n", log_level, last_log);
	fflush(stdout);
}

/* The last registered source (NULL before any), its struct size, the number of
 * registrations and the last logged line. */
__declspec(dllexport) const struct obs_source_info *stub_registered(size_t *size, int *count,
								     const char **log)
{
	*size = registered_size;
	*count = registrations;
	*log = last_log;
	return registrations ? &registered : NULL;
}
