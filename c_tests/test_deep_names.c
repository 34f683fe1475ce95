/* Entry names of a million segments through the C API, on a thread with a 256 KiB stack: a
   module walk that recursed once per '.' overflowed the host's stack during a load report.
   mmckpt_module_add and a spec each give a module one such name; each module is loaded from a
   real checkpoint (so the name is missing and the checkpoint's keys are unexpected: the report
   walks the name's submodule path), strictly and not, then freed. */
#include "support.h"

#include <pthread.h>

#define SEGMENTS 1000000

/* "a.a.…a.<leaf>": SEGMENTS segments of "a", then the leaf. Caller frees. */
static char *deep_name(const char *leaf) {
  size_t leaf_len = strlen(leaf);
  char *name = malloc(2 * (size_t)SEGMENTS + leaf_len + 1);
  size_t i;
  if (!name) exit(2);
  for (i = 0; i < SEGMENTS; i++) {
    name[2 * i] = 'a';
    name[2 * i + 1] = '.';
  }
  memcpy(name + 2 * (size_t)SEGMENTS, leaf, leaf_len + 1);
  return name;
}

/* Loads the recipe checkpoint into `m`, which holds `name` and none of its keys. */
static void load_and_report(mmckpt_module *m, const char *name) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_load_options opts;
  mmckpt_load_report *report = NULL;
  const char *message;
  size_t name_len = strlen(name);

  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/recipe.pt"), NULL, &ckpt));
  if (!ckpt) return;
  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  /* Strict: torch's error text names the missing deep key; nothing changes. */
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, NULL), MMCKPT_ERR_KEY_MISMATCH);
  CHECK(strlen(mmckpt_last_error()) > name_len);
  CHECK_ERROR_MENTIONS("Missing key(s) in state_dict: \"a.a.a.a.");
  /* Not strict: a report listing the deep key as missing and every checkpoint key unexpected. */
  opts.flags = MMCKPT_LOAD_ASSIGN;
  CHECK_OK(mmckpt_module_load(m, ckpt, &opts, &report));
  CHECK(report != NULL);
  if (report) {
    CHECK(mmckpt_load_report_missing_count(report) == 1);
    CHECK(mmckpt_load_report_missing(report, 0) != NULL &&
          strcmp(mmckpt_load_report_missing(report, 0), name) == 0);
    CHECK(mmckpt_load_report_unexpected_count(report) == mmckpt_checkpoint_tensor_count(ckpt));
    message = mmckpt_load_report_message(report);
    CHECK(message != NULL && strncmp(message, "_IncompatibleKeys(missing_keys=['a.a.", 37) == 0);
    CHECK(message != NULL && strstr(message, name) != NULL);
    mmckpt_load_report_free(report);
  }
  mmckpt_checkpoint_close(ckpt);
}

static void *deep_names(void *unused) {
  char *name = deep_name("weight");
  char *spec;
  size_t spec_len;
  int64_t shape[1] = {3};
  mmckpt_module *m = NULL;
  (void)unused;

  /* mmckpt_module_add. */
  CHECK_OK(mmckpt_module_new("Deep", &m));
  if (m) {
    CHECK_OK(mmckpt_module_add(m, name, MMCKPT_DTYPE_FLOAT32, shape, 1, 0));
    /* The same name again is a duplicate; a name ending in '.' has an empty segment. */
    CHECK_STATUS(mmckpt_module_add(m, name, MMCKPT_DTYPE_FLOAT32, shape, 1, 0),
                 MMCKPT_ERR_INVALID_ARGUMENT);
    CHECK(mmckpt_module_count(m) == 1);
    load_and_report(m, name);
    mmckpt_module_free(m);
  }

  /* A flat-form spec holding the name. */
  spec = malloc(strlen(name) + 64);
  if (!spec) exit(2);
  spec_len = (size_t)sprintf(spec, "{\"entries\": [{\"name\": \"%s\", \"shape\": [3]}]}", name);
  m = NULL;
  CHECK_OK(mmckpt_module_from_spec(spec, spec_len, &m));
  if (m) {
    load_and_report(m, name);
    mmckpt_module_free(m);
  }
  free(spec);
  free(name);
  return NULL;
}

int main(int argc, char **argv) {
  pthread_t thread;
  pthread_attr_t attr;
  test_init(argc, argv);
  CHECK(pthread_attr_init(&attr) == 0);
  CHECK(pthread_attr_setstacksize(&attr, 256 << 10) == 0);
  CHECK(pthread_create(&thread, &attr, deep_names, NULL) == 0);
  CHECK(pthread_join(thread, NULL) == 0);
  pthread_attr_destroy(&attr);
  return test_finish("test_deep_names");
}
