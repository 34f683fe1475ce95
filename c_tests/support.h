/* Helpers shared by the C tests: checks, fixture paths, SHA-256, row-major gathering. */
#ifndef MMCKPT_TEST_SUPPORT_H
#define MMCKPT_TEST_SUPPORT_H

#include "mmckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

extern int test_failures;
extern const char *test_data_dir; /* the repository's tests/ folder (argv[1]) */

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);        \
      test_failures++;                                                                 \
    }                                                                                  \
  } while (0)

/* Checks a status and prints the last error when it differs. */
#define CHECK_STATUS(call, expected)                                                   \
  do {                                                                                 \
    mmckpt_status st_ = (call);                                                        \
    if (st_ != (mmckpt_status)(expected)) {                                            \
      fprintf(stderr, "%s:%d: %s returned %u (%s), expected %s; last error: %s\n",     \
              __FILE__, __LINE__, #call, (unsigned)st_, mmckpt_status_str(st_),        \
              #expected, mmckpt_last_error());                                         \
      test_failures++;                                                                 \
    }                                                                                  \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, MMCKPT_OK)

/* Checks that the last error text contains a substring. */
#define CHECK_ERROR_MENTIONS(needle)                                                   \
  do {                                                                                 \
    if (!strstr(mmckpt_last_error(), (needle))) {                                      \
      fprintf(stderr, "%s:%d: last error \"%s\" does not mention \"%s\"\n", __FILE__,  \
              __LINE__, mmckpt_last_error(), (needle));                                \
      test_failures++;                                                                 \
    }                                                                                  \
  } while (0)

/* Parses argv, returns the exit code for main. */
void test_init(int argc, char **argv);
int test_finish(const char *name);

/* "<tests>/<relative>" in a static buffer (one at a time). */
const char *data_path(const char *relative);

/* Lower-case hex SHA-256 of bytes into out[65]. */
void sha256_hex(const void *data, size_t len, char out[65]);

/* Copies a tensor's elements into row-major order; returns a malloc'd buffer (numel*itemsize
   bytes, at least 1) that the caller frees. */
unsigned char *gather_row_major(const mmckpt_tensor *t);

/* Reads a whole file; returns malloc'd bytes and sets *len; NULL on failure. */
unsigned char *read_file(const char *path, size_t *len);

/* One row of tests/fixtures/manifest.tsv. */
typedef struct manifest_row {
  char file[64];
  char name[256];
  char dtype[32];
  int ndim;
  int64_t shape[16];
  int64_t stride[16];
  int64_t storage_offset;
  uint64_t numel;
  int is_parameter;
  int requires_grad;
  int storage_group;
  char sha256[65];
} manifest_row;

/* Loads manifest.tsv; returns a malloc'd array and sets *count. */
manifest_row *load_manifest(size_t *count);

#ifdef __cplusplus
}
#endif

#endif
