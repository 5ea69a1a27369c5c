/* The Windows load test: loads the module DLL (argv[1]) the way libobs does, against the
 * stand-in obs.dll (obs_stub.c) beside this executable, and checks what it registers.
 *
 *   loader.exe obs-ai-background.dll      (scripts/windows-test.sh runs it under Wine)
 *
 * Checks: the exports libobs requires are there; obs_module_ver() is LIBOBS_API_VER of the
 * OBS 29 headers; obs_module_load() returns true and registers exactly one source through
 * obs_register_source_s, with the size of OBS 29's struct obs_source_info, the id
 * "ai_background_filter", type filter, video + sRGB output flags and the callbacks the
 * filter implements (and none of the ones it does not); get_name and obs_module_name give
 * strings; the module logged its "version ... loaded" line through blog. Prints one line per
 * failure, "load test: ok" and exit status 0 when all pass. */
/* windows.h first: its intrinsics headers must come before SIMDe's native aliases (obs.h). */
#include <windows.h>
#include <obs-module.h>
#include <stdio.h>
#include <string.h>

typedef bool (*load_fn)(void);
typedef void (*void_fn)(void);
typedef uint32_t (*ver_fn)(void);
typedef void (*set_pointer_fn)(obs_module_t *);
typedef void (*set_locale_fn)(const char *);
typedef const char *(*name_fn)(void);
typedef const struct obs_source_info *(*registered_fn)(size_t *, int *, const char **);

static int failures;

static void check(int ok, const char *what)
{
	if (!ok) {
		printf("FAIL: %s\n", what);
		failures++;
	}
}

static FARPROC sym(HMODULE m, const char *name, int required)
{
	FARPROC p = GetProcAddress(m, name);
	if (!p && required) {
		printf("FAIL: no export %s\n", name);
		failures++;
	}
	return p;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: loader.exe MODULE.dll\n");
		return 2;
	}
	HMODULE obs = LoadLibraryA("obs.dll");
	HMODULE m = LoadLibraryA(argv[1]);
	if (!obs || !m) {
		printf("FAIL: LoadLibrary(%s): error %lu\n", obs ? argv[1] : "obs.dll",
		       (unsigned long)GetLastError());
		return 1;
	}
	registered_fn registered = (registered_fn)sym(obs, "stub_registered", 1);
	load_fn load = (load_fn)sym(m, "obs_module_load", 1);
	set_pointer_fn set_pointer = (set_pointer_fn)sym(m, "obs_module_set_pointer", 1);
	ver_fn ver = (ver_fn)sym(m, "obs_module_ver", 1);
	set_locale_fn set_locale = (set_locale_fn)sym(m, "obs_module_set_locale", 1);
	void_fn unload = (void_fn)sym(m, "obs_module_unload", 1);
	name_fn module_name = (name_fn)sym(m, "obs_module_name", 1);
	const char *optional[] = {"obs_module_free_locale", "obs_module_get_string",
				  "obs_module_description", "obs_module_author",
				  "obs_current_module"};
	for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
		sym(m, optional[i], 1);
	if (failures)
		return 1;

	uint32_t v = ver();
	printf("obs_module_ver: %u.%u.%u\n", v >> 24, (v >> 16) & 0xff, v & 0xffff);
	check(v == LIBOBS_API_VER, "obs_module_ver() == LIBOBS_API_VER of the OBS 29 headers");
	check(LIBOBS_API_MAJOR_VER == 29, "built against OBS 29 headers");

	static char fake_module[256]; /* an opaque obs_module_t: the stub never reads it */
	set_pointer((obs_module_t *)fake_module);
	set_locale("en-US"); /* obs_module_load_locale is a stub returning NULL */
	check(load(), "obs_module_load() returns true");

	size_t size = 0;
	int count = 0;
	const char *log = "";
	const struct obs_source_info *info = registered(&size, &count, &log);
	check(count == 1, "exactly one obs_register_source_s call");
	check(strstr(log, "[obs-ai-background] version") != NULL,
	      "logged '[obs-ai-background] version ... loaded' through blog");
	if (!info) {
		printf("load test: %d failure(s)\n", failures + 1);
		return 1;
	}
	printf("registered: id=%s type=%d output_flags=0x%x size=%zu\n", info->id, (int)info->type,
	       info->output_flags, size);
	check(size == sizeof(struct obs_source_info), "size == sizeof(struct obs_source_info)");
	check(info->id && strcmp(info->id, "ai_background_filter") == 0,
	      "id == ai_background_filter");
	check(info->type == OBS_SOURCE_TYPE_FILTER, "type == OBS_SOURCE_TYPE_FILTER");
	check((info->output_flags & OBS_SOURCE_VIDEO) != 0, "output_flags has OBS_SOURCE_VIDEO");
	check((info->output_flags & OBS_SOURCE_SRGB) != 0, "output_flags has OBS_SOURCE_SRGB");
	check((info->output_flags & (OBS_SOURCE_AUDIO | OBS_SOURCE_ASYNC)) == 0,
	      "output_flags without AUDIO / ASYNC");
#define SET(cb) check(info->cb != NULL, #cb " set")
#define UNSET(cb) check(info->cb == NULL, #cb " not set")
	SET(get_name);
	SET(create);
	SET(destroy);
	SET(get_defaults);
	SET(get_properties);
	SET(update);
	SET(video_tick);
	SET(video_render);
	SET(filter_video);
	SET(filter_remove);
	SET(video_get_color_space);
	UNSET(get_width);
	UNSET(get_height);
	UNSET(filter_audio);
	UNSET(audio_render);
	UNSET(activate);
	if (info->get_name) {
		const char *name = info->get_name(NULL);
		printf("get_name: %s\n", name ? name : "(null)");
		check(name && name[0], "get_name returns a string");
	}
	const char *mname = module_name();
	check(mname && strcmp(mname, "AI Background") == 0, "obs_module_name() == AI Background");
	unload();
	if (failures) {
		printf("load test: %d failure(s)\n", failures);
		return 1;
	}
	printf("load test: ok\n");
	return 0;
}
