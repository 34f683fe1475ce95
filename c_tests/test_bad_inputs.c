/* Every hand-made bad input (tests/data/bad/expected.tsv) gets its status and a message naming
   the problem through the C ABI, and *out is never written on failure. */
#include "support.h"

#include <sys/stat.h>
#include <unistd.h>

static mmckpt_status status_by_name(const char *name) {
  static const struct { const char *name; mmckpt_status s; } table[] = {
      {"MMCKPT_ERR_IO", MMCKPT_ERR_IO},         {"MMCKPT_ERR_FORMAT", MMCKPT_ERR_FORMAT},
      {"MMCKPT_ERR_UNSUPPORTED", MMCKPT_ERR_UNSUPPORTED}, {"MMCKPT_ERR_UNSAFE", MMCKPT_ERR_UNSAFE},
      {"MMCKPT_ERR_LIMIT", MMCKPT_ERR_LIMIT},   {"MMCKPT_ERR_NOT_FOUND", MMCKPT_ERR_NOT_FOUND},
  };
  size_t i;
  for (i = 0; i < sizeof table / sizeof table[0]; i++)
    if (strcmp(table[i].name, name) == 0) return table[i].s;
  fprintf(stderr, "unknown status %s in expected.tsv\n", name);
  exit(2);
}

static void run_table(void) {
  size_t len = 0, cases = 0;
  unsigned char *text = read_file(data_path("data/bad/expected.tsv"), &len);
  char *line, *save = NULL;
  CHECK(text != NULL);
  if (!text) return;
  text[len] = 0;
  for (line = strtok_r((char *)text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *file = line, *flags, *status, *needle, path[512];
    mmckpt_checkpoint *sentinel = (mmckpt_checkpoint *)(void *)0x1, *ckpt = sentinel;
    mmckpt_open_options opts;
    mmckpt_status expected, got;
    if (line[0] == '#') continue;
    flags = strchr(file, '\t'); *flags++ = 0;
    status = strchr(flags, '\t'); *status++ = 0;
    needle = strchr(status, '\t');
    if (needle) *needle++ = 0; else needle = (char *)"";
    expected = status_by_name(status);
    snprintf(path, sizeof path, "%s/data/bad/%s", test_data_dir, file);
    mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION);
    if (strcmp(flags, "STRICT") == 0) opts.flags = MMCKPT_OPEN_STRICT;
    got = mmckpt_checkpoint_open(path, &opts, &ckpt);
    if (strcmp(flags, "TENSOR") == 0) {
      mmckpt_tensor t;
      CHECK(got == MMCKPT_OK && ckpt != sentinel);
      if (got != MMCKPT_OK) continue;
      got = mmckpt_checkpoint_tensor_at(ckpt, 0, &t);
      CHECK(mmckpt_checkpoint_name_at(ckpt, 0) != NULL);
      mmckpt_checkpoint_close(ckpt);
    } else {
      CHECK(ckpt == sentinel);
    }
    if (got != expected) {
      fprintf(stderr, "%s: got %s, expected %s (%s)\n", file, mmckpt_status_str(got), status,
              mmckpt_last_error());
      test_failures++;
    } else if (!strstr(mmckpt_last_error(), needle)) {
      fprintf(stderr, "%s: message \"%s\" does not mention \"%s\"\n", file, mmckpt_last_error(), needle);
      test_failures++;
    }
    cases++;
  }
  CHECK(cases >= 20);
  free(text);
}

/* A FIFO is refused at once (opening one for reading would wait for a writer); the alarm turns
   a regression into a failure instead of a hang. */
static void run_fifo(void) {
  char path[128];
  mmckpt_checkpoint *ckpt = NULL;
  snprintf(path, sizeof path, "/tmp/mmckpt-test-fifo-%ld.pt", (long)getpid());
  remove(path);
  CHECK(mkfifo(path, 0600) == 0);
  alarm(20);
  CHECK_STATUS(mmckpt_checkpoint_open(path, NULL, &ckpt), MMCKPT_ERR_IO);
  alarm(0);
  CHECK_ERROR_MENTIONS(path);
  CHECK_ERROR_MENTIONS("FIFO");
  CHECK(ckpt == NULL);
  remove(path);
}

int main(int argc, char **argv) {
  mmckpt_checkpoint *ckpt = NULL;
  test_init(argc, argv);
  run_table();
  run_fifo();
  CHECK_STATUS(mmckpt_checkpoint_open("/nonexistent/dir/model.pt", NULL, &ckpt), MMCKPT_ERR_IO);
  CHECK_ERROR_MENTIONS("/nonexistent/dir/model.pt");
  CHECK_STATUS(mmckpt_checkpoint_open(test_data_dir, NULL, &ckpt), MMCKPT_ERR_IO);
  CHECK_ERROR_MENTIONS("directory");
  CHECK(ckpt == NULL);
  /* Without STRICT the os.system global is an opaque object: opened, nothing executed. */
  remove("/tmp/mmckpt-pwned-marker");
  CHECK_OK(mmckpt_checkpoint_open(data_path("data/bad/global_os_system.pt"), NULL, &ckpt));
  CHECK(mmckpt_checkpoint_tensor_count(ckpt) == 0);
  mmckpt_checkpoint_close(ckpt);
  {
    FILE *f = fopen("/tmp/mmckpt-pwned-marker", "r");
    CHECK(f == NULL);
    if (f) fclose(f);
  }
  return test_finish("test_bad_inputs");
}
