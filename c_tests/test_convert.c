/* mmckpt_convert against torch 2.15's .to(): tests/data/conversions/conversions.tsv
   (scripts/make_conversions.py) holds source bytes and torch's result per dtype pair; every
   byte must match. Then refusals, and mmckpt_last_error's contract: per thread, set by a failed
   call, left as it is by successful ones. */
#include "support.h"

#include <pthread.h>
#include <stdint.h>

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Decodes `len` hex digits into out; returns the number of bytes. */
static size_t unhex(const char *text, size_t len, unsigned char *out) {
  size_t i;
  for (i = 0; i + 1 < len; i += 2) out[i / 2] = (unsigned char)(hex_value(text[i]) * 16 + hex_value(text[i + 1]));
  return len / 2;
}

static mmckpt_dtype dtype_named(const char *name, size_t len) {
  uint32_t code;
  for (code = 1; code < 64; code++) {
    const char *n = mmckpt_dtype_name(code);
    if (n && strlen(n) == len && strncmp(n, name, len) == 0) return (mmckpt_dtype)code;
  }
  fprintf(stderr, "unknown dtype %.*s\n", (int)len, name);
  exit(2);
}

static void conversions_equal_torch(void) {
  size_t len = 0, pairs = 0;
  unsigned char *text = read_file(data_path("data/conversions/conversions.tsv"), &len);
  char *line, *end;
  if (!text) {
    fprintf(stderr, "cannot read conversions.tsv\n");
    exit(2);
  }
  text[len] = 0;
  for (line = (char *)text; *line; line = end + (*end != 0)) {
    char *cols[5];
    size_t widths[5], c, count, src_len, want_len;
    unsigned char *src, *want, *got;
    mmckpt_dtype from, to;
    end = strchr(line, '\n');
    if (!end) end = line + strlen(line);
    cols[0] = line;
    for (c = 0; c < 5; c++) {
      char *tab = c < 4 ? memchr(cols[c], '\t', (size_t)(end - cols[c])) : end;
      widths[c] = (size_t)(tab - cols[c]);
      if (c < 4) cols[c + 1] = tab + 1;
    }
    from = dtype_named(cols[0], widths[0]);
    to = dtype_named(cols[1], widths[1]);
    count = (size_t)strtoul(cols[2], NULL, 10);
    src = malloc(widths[3] / 2 + 1);
    want = malloc(widths[4] / 2 + 1);
    got = malloc(widths[4] / 2 + 1);
    src_len = unhex(cols[3], widths[3], src);
    want_len = unhex(cols[4], widths[4], want);
    CHECK(src_len == count * mmckpt_dtype_itemsize(from) && want_len == count * mmckpt_dtype_itemsize(to));
    CHECK_OK(mmckpt_convert(got, to, src, from, count));
    if (memcmp(got, want, want_len) != 0) {
      fprintf(stderr, "%s -> %s differs from torch\n", mmckpt_dtype_name(from), mmckpt_dtype_name(to));
      test_failures++;
    }
    free(src);
    free(want);
    free(got);
    pairs++;
  }
  CHECK(pairs == 21);
  free(text);
}

static void refusals(void) {
  float f[2] = {1.0f, 2.0f};
  unsigned char out[8] = {0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA};
  CHECK_STATUS(mmckpt_convert(out, MMCKPT_DTYPE_FLOAT8_E4M3FN, f, MMCKPT_DTYPE_FLOAT32, 2), MMCKPT_ERR_UNSUPPORTED);
  CHECK_ERROR_MENTIONS("float32 to float8_e4m3fn");
  CHECK(out[0] == 0xAA && out[1] == 0xAA); /* not written */
  CHECK_STATUS(mmckpt_convert(out, MMCKPT_DTYPE_FLOAT32, f, MMCKPT_DTYPE_INT32, 2), MMCKPT_ERR_UNSUPPORTED);
  CHECK_STATUS(mmckpt_convert(out, 999, f, MMCKPT_DTYPE_FLOAT32, 2), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("dst_dtype");
  CHECK_STATUS(mmckpt_convert(NULL, MMCKPT_DTYPE_FLOAT16, f, MMCKPT_DTYPE_FLOAT32, 2), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("dst");
  CHECK_STATUS(mmckpt_convert(f, MMCKPT_DTYPE_FLOAT16, f, MMCKPT_DTYPE_FLOAT32, 2), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("overlap");
  CHECK_OK(mmckpt_convert(NULL, MMCKPT_DTYPE_FLOAT16, NULL, MMCKPT_DTYPE_FLOAT32, 0));
  CHECK_OK(mmckpt_convert(out, MMCKPT_DTYPE_FLOAT16, f, MMCKPT_DTYPE_FLOAT32, 2));
  CHECK(out[0] == 0x00 && out[1] == 0x3C && out[2] == 0x00 && out[3] == 0x40 && out[4] == 0xAA);
}

static void *fail_on_another_thread(void *arg) {
  mmckpt_checkpoint *ckpt = NULL;
  (void)arg;
  if (mmckpt_checkpoint_open("/nonexistent/other-thread.pt", NULL, &ckpt) == MMCKPT_OK) return (void *)1;
  return strstr(mmckpt_last_error(), "other-thread.pt") ? NULL : (void *)1;
}

static void last_error_is_per_thread_and_kept_by_success(void) {
  mmckpt_checkpoint *ckpt = NULL;
  const char *before;
  pthread_t thread;
  void *result = (void *)1;
  float f = 1.0f;
  uint16_t h;
  CHECK_STATUS(mmckpt_checkpoint_open("/nonexistent/this-thread.pt", NULL, &ckpt), MMCKPT_ERR_IO);
  before = mmckpt_last_error();
  CHECK(strstr(before, "this-thread.pt") != NULL);
  /* Successful calls, status-returning or not, leave it as it is (same text, same pointer). */
  CHECK_OK(mmckpt_convert(&h, MMCKPT_DTYPE_FLOAT16, &f, MMCKPT_DTYPE_FLOAT32, 1));
  CHECK(mmckpt_dtype_itemsize(MMCKPT_DTYPE_FLOAT32) == 4);
  CHECK(mmckpt_last_error() == before && strstr(before, "this-thread.pt") != NULL);
  /* Another thread's failure is that thread's. */
  CHECK(pthread_create(&thread, NULL, fail_on_another_thread, NULL) == 0);
  CHECK(pthread_join(thread, &result) == 0);
  CHECK(result == NULL);
  CHECK(strstr(mmckpt_last_error(), "this-thread.pt") != NULL);
  /* The next failure replaces it. */
  CHECK_STATUS(mmckpt_convert(&h, 0, &f, MMCKPT_DTYPE_FLOAT32, 1), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mmckpt_last_error(), "this-thread.pt") == NULL);
}

int main(int argc, char **argv) {
  test_init(argc, argv);
  conversions_equal_torch();
  refusals();
  last_error_is_per_thread_and_kept_by_success();
  return test_finish("test_convert");
}
