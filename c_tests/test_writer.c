/* mmckpt_checkpoint_save: a fixture written as a torch archive and as safetensors, reopened,
   every tensor equal (row-major bytes, dtype, shape); the progress callback, a cancel that
   leaves the old file, bad arguments, and the options' init / static initialiser. */
#include "support.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct progress_state {
  uint64_t calls, last_done, total;
  int stop;
} progress_state;

static int32_t on_progress(void *user_data, uint64_t done, uint64_t total) {
  progress_state *p = user_data;
  CHECK(done >= p->last_done && done <= total);
  p->calls++;
  p->last_done = done;
  p->total = total;
  return !p->stop;
}

static void same_tensors(mmckpt_checkpoint *a, mmckpt_checkpoint *b, int all_names) {
  size_t i, n = mmckpt_checkpoint_tensor_count(b);
  if (all_names) CHECK(n == mmckpt_checkpoint_tensor_count(a));
  CHECK(n > 0);
  for (i = 0; i < n; i++) {
    mmckpt_tensor x, y;
    size_t d;
    CHECK_OK(mmckpt_checkpoint_tensor_at(b, i, &y));
    CHECK_OK(mmckpt_checkpoint_tensor(a, y.name, &x));
    CHECK(x.dtype == y.dtype && x.ndim == y.ndim && x.numel == y.numel);
    for (d = 0; d < x.ndim && d < y.ndim; d++) CHECK(x.shape[d] == y.shape[d]);
    {
      unsigned char *rx = gather_row_major(&x), *ry = gather_row_major(&y);
      size_t bytes = (size_t)x.numel * mmckpt_dtype_itemsize(x.dtype);
      CHECK(bytes == 0 || memcmp(rx, ry, bytes) == 0);
      free(rx);
      free(ry);
    }
  }
}

static char *scratch(const char *name) {
  static char dir[256];
  char *path = malloc(512);
  if (!dir[0]) {
    snprintf(dir, sizeof dir, "/tmp/mmckpt-c-writer-%ld", (long)getpid());
    mkdir(dir, 0700);
  }
  snprintf(path, 512, "%s/%s", dir, name);
  return path;
}

int main(int argc, char **argv) {
  mmckpt_checkpoint *in = NULL, *out = NULL;
  mmckpt_save_options opts, init_opts, static_opts = MMCKPT_SAVE_OPTIONS_INIT;
  progress_state p = {0, 0, 0, 0};
  char *pt, *st;
  test_init(argc, argv);
  pt = scratch("forms.pt");
  st = scratch("forms.safetensors");

  CHECK_OK(mmckpt_save_options_init(&init_opts, MMCKPT_SAVE_OPTIONS_VERSION));
  /* Field by field: the padding after `dtype` is not written by either. */
  CHECK(init_opts.version == static_opts.version && init_opts.flags == static_opts.flags &&
        init_opts.dtype == static_opts.dtype && init_opts.progress == static_opts.progress &&
        init_opts.user_data == static_opts.user_data);
  CHECK_STATUS(mmckpt_save_options_init(&opts, MMCKPT_SAVE_OPTIONS_VERSION + 1), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("mmckpt_save_options");

  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/forms.pt"), NULL, &in));
  if (!in) return test_finish("test_writer");

  /* A torch archive, with progress. */
  opts = init_opts;
  opts.progress = on_progress;
  opts.user_data = &p;
  CHECK_OK(mmckpt_checkpoint_save(in, pt, MMCKPT_SAVE_TORCH, &opts));
  CHECK(p.calls > 0 && p.last_done == p.total && p.total > 0);
  CHECK_OK(mmckpt_checkpoint_open(pt, NULL, &out));
  if (out) {
    CHECK(strcmp(mmckpt_checkpoint_format(out), "zip") == 0);
    same_tensors(in, out, 1);
    mmckpt_checkpoint_close(out);
    out = NULL;
  }

  /* safetensors, defaults (NULL options). */
  CHECK_OK(mmckpt_checkpoint_save(in, st, MMCKPT_SAVE_SAFETENSORS, NULL));
  CHECK_OK(mmckpt_checkpoint_open(st, NULL, &out));
  if (out) {
    CHECK(strcmp(mmckpt_checkpoint_format(out), "safetensors") == 0);
    same_tensors(in, out, 0);
    mmckpt_checkpoint_close(out);
    out = NULL;
  }

  /* A cancel leaves the file that was there. */
  {
    size_t before_len = 0, after_len = 0;
    unsigned char *before = read_file(pt, &before_len), *after;
    opts = init_opts;
    opts.flags = MMCKPT_SAVE_CONTIGUOUS;
    opts.dtype = MMCKPT_DTYPE_BFLOAT16;
    opts.progress = on_progress;
    opts.user_data = &p;
    p.stop = 1;
    p.last_done = 0;
    CHECK_STATUS(mmckpt_checkpoint_save(in, pt, MMCKPT_SAVE_TORCH, &opts), MMCKPT_ERR_CALLBACK);
    after = read_file(pt, &after_len);
    CHECK(before && after && before_len == after_len && memcmp(before, after, before_len) == 0);
    free(before);
    free(after);
  }

  /* Bad arguments. */
  CHECK_STATUS(mmckpt_checkpoint_save(NULL, pt, MMCKPT_SAVE_TORCH, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_save(in, NULL, MMCKPT_SAVE_TORCH, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_save(in, pt, 7, NULL), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("format 7");
  opts = init_opts;
  opts.dtype = MMCKPT_DTYPE_INT8;
  CHECK_STATUS(mmckpt_checkpoint_save(in, pt, MMCKPT_SAVE_TORCH, &opts), MMCKPT_ERR_INVALID_ARGUMENT);
  opts = init_opts;
  opts.flags = 1u << 9;
  CHECK_STATUS(mmckpt_checkpoint_save(in, pt, MMCKPT_SAVE_TORCH, &opts), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_save(in, "/no/such/dir/x.pt", MMCKPT_SAVE_TORCH, NULL), MMCKPT_ERR_IO);

  mmckpt_checkpoint_close(in);
  unlink(pt);
  unlink(st);
  free(pt);
  free(st);
  return test_finish("test_writer");
}
