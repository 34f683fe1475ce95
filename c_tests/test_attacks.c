/* The allowlist is a boundary (tests/data/attacks/expected.tsv, scripts/make_attacks.py): hand-
   made malicious pickles never execute anything (their marker files never appear), a default
   open gives the listed status (and when it opens, every tensor is readable), and a STRICT open
   fails with MMCKPT_ERR_UNSAFE naming the global. */
#include "support.h"

#include <unistd.h>

static mmckpt_status status_by_name(const char *name) {
  static const struct { const char *name; mmckpt_status s; } table[] = {
      {"MMCKPT_OK", MMCKPT_OK},                 {"MMCKPT_ERR_FORMAT", MMCKPT_ERR_FORMAT},
      {"MMCKPT_ERR_UNSUPPORTED", MMCKPT_ERR_UNSUPPORTED}, {"MMCKPT_ERR_UNSAFE", MMCKPT_ERR_UNSAFE},
      {"MMCKPT_ERR_LIMIT", MMCKPT_ERR_LIMIT},
  };
  size_t i;
  for (i = 0; i < sizeof table / sizeof table[0]; i++)
    if (strcmp(table[i].name, name) == 0) return table[i].s;
  fprintf(stderr, "unknown status %s in expected.tsv\n", name);
  exit(2);
}

static char *next_field(char **cursor) {
  char *field = *cursor, *tab = strchr(field, '\t');
  if (tab) { *tab = 0; *cursor = tab + 1; } else { *cursor = field + strlen(field); }
  return field;
}

int main(int argc, char **argv) {
  size_t len = 0, cases = 0;
  unsigned char *text;
  char *line, *save = NULL;
  test_init(argc, argv);
  text = read_file(data_path("data/attacks/expected.tsv"), &len);
  CHECK(text != NULL);
  if (!text) return test_finish("test_attacks");
  text[len] = 0;
  for (line = strtok_r((char *)text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *cursor = line, *file, *dflt, *strict, *needle, *marker, path[512];
    mmckpt_checkpoint *ckpt = NULL;
    mmckpt_open_options opts;
    mmckpt_status got;
    if (line[0] == '#') continue;
    file = next_field(&cursor);
    dflt = next_field(&cursor);
    strict = next_field(&cursor);
    needle = next_field(&cursor);
    marker = next_field(&cursor);
    remove(marker);
    snprintf(path, sizeof path, "%s/data/attacks/%s", test_data_dir, file);

    got = mmckpt_checkpoint_open(path, NULL, &ckpt);
    if (got != status_by_name(dflt)) {
      fprintf(stderr, "%s: default open gave %s, expected %s (%s)\n", file, mmckpt_status_str(got),
              dflt, mmckpt_last_error());
      test_failures++;
    }
    if (got == MMCKPT_OK) {
      size_t i, n = mmckpt_checkpoint_tensor_count(ckpt);
      mmckpt_tensor t;
      CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "w", &t));
      for (i = 0; i < n; i++) {
        mmckpt_status st = mmckpt_checkpoint_tensor_at(ckpt, i, &t);
        CHECK(st == MMCKPT_OK || st == MMCKPT_ERR_UNSUPPORTED);
        if (st == MMCKPT_OK && t.nbytes) {
          const volatile unsigned char *p = (const volatile unsigned char *)t.data;
          unsigned sum = 0;
          uint64_t k;
          for (k = 0; k < t.nbytes; k++) sum += p[k];
          (void)sum;
        }
      }
      mmckpt_checkpoint_close(ckpt);
      ckpt = NULL;
    }

    mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION);
    opts.flags = MMCKPT_OPEN_STRICT;
    got = mmckpt_checkpoint_open(path, &opts, &ckpt);
    if (got != status_by_name(strict)) {
      fprintf(stderr, "%s: strict open gave %s, expected %s (%s)\n", file, mmckpt_status_str(got),
              strict, mmckpt_last_error());
      test_failures++;
    } else if (!strstr(mmckpt_last_error(), needle)) {
      fprintf(stderr, "%s: strict error \"%s\" does not name %s\n", file, mmckpt_last_error(), needle);
      test_failures++;
    }
    CHECK(ckpt == NULL);
    if (access(marker, F_OK) == 0) {
      fprintf(stderr, "%s: its payload ran (%s exists)\n", file, marker);
      test_failures++;
    }
    cases++;
  }
  CHECK(cases >= 25);
  free(text);
  return test_finish("test_attacks");
}
