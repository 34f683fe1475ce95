/* MMCKPT_LOAD_CONTIGUOUS on fixtures/transposed.pt (weights saved as-is with facenet-pytorch's
   layouts: conv1.weight [10, 3, 3, 3] with strides [1, 10, 30, 90], a transposed Linear weight,
   an as_strided view, a transposed float16 tensor): every loaded entry is row-major, `data`
   read as a plain C array equals torch's row-major values (the manifest's SHA-256), row-major
   tensors stay zero-copy views, and the report names the copies. Without the flag the strides
   are the checkpoint's, and reading `data` as row-major gives other values. */
#include "support.h"

#include <stdint.h>

static const char *const STRIDED[] = {"conv1.weight", "fc.weight", "strided", "half_t"};
static const size_t N_STRIDED = sizeof STRIDED / sizeof STRIDED[0];

static int is_strided_name(const char *name) {
  size_t i;
  for (i = 0; i < N_STRIDED; i++)
    if (strcmp(name, STRIDED[i]) == 0) return 1;
  return 0;
}

static const manifest_row *row_of(const manifest_row *rows, size_t count, const char *name) {
  size_t i;
  for (i = 0; i < count; i++)
    if (strcmp(rows[i].file, "transposed.pt") == 0 && strcmp(rows[i].name, name) == 0) return &rows[i];
  return NULL;
}

/* `data` as a plain row-major array of numel elements has torch's row-major values. */
static int data_is_row_major_values(const manifest_row *rows, size_t count, const mmckpt_tensor *t) {
  const manifest_row *r = row_of(rows, count, t->name);
  char hex[65];
  if (!r || !t->data) return 0;
  sha256_hex(t->data, (size_t)t->numel * mmckpt_dtype_itemsize(t->dtype), hex);
  return strcmp(hex, r->sha256) == 0;
}

static int is_row_major_strides(const mmckpt_tensor *t) {
  int64_t expected = 1;
  uint32_t d;
  for (d = t->ndim; d-- > 0;) {
    if (t->shape[d] != 1 && t->strides[d] != expected) return 0;
    expected *= t->shape[d];
  }
  return 1;
}

static void load_and_check(const char *path, uint32_t open_flags, uint32_t load_flags, const manifest_row *rows,
                           size_t count) {
  mmckpt_open_options oo = MMCKPT_OPEN_OPTIONS_INIT;
  mmckpt_load_options lo = MMCKPT_LOAD_OPTIONS_INIT;
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = NULL;
  mmckpt_load_report *report = NULL;
  size_t i, n;
  oo.flags = open_flags;
  CHECK_OK(mmckpt_checkpoint_open(path, &oo, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_module_from_checkpoint(ckpt, &m));
  lo.flags |= load_flags;
  CHECK_OK(mmckpt_module_load(m, ckpt, &lo, &report));
  /* The copies are named in load (file) order, which here is the table order. */
  CHECK(mmckpt_load_report_copied_count(report) == N_STRIDED);
  for (i = 0; i < N_STRIDED; i++) {
    const char *name = mmckpt_load_report_copied(report, i);
    CHECK(name && strcmp(name, STRIDED[i]) == 0);
  }
  CHECK(mmckpt_load_report_copied(report, N_STRIDED) == NULL);
  mmckpt_checkpoint_close(ckpt); /* the views keep the file alive; the copies are the module's */
  n = mmckpt_module_count(m);
  CHECK(n == 6);
  for (i = 0; i < n; i++) {
    mmckpt_tensor t;
    CHECK_OK(mmckpt_module_at(m, i, &t));
    CHECK(t.flags & MMCKPT_TENSOR_CONTIGUOUS);
    CHECK(is_row_major_strides(&t));
    CHECK(t.storage_offset == 0 || !is_strided_name(t.name));
    CHECK(data_is_row_major_values(rows, count, &t));
    if (is_strided_name(t.name)) {
      CHECK(!(t.flags & MMCKPT_TENSOR_MAPPED) && t.file_offset == MMCKPT_NO_OFFSET);
      CHECK((uintptr_t)t.data % 64 == 0);
      CHECK(t.nbytes == t.numel * mmckpt_dtype_itemsize(t.dtype));
    } else if (!(open_flags & MMCKPT_OPEN_READ)) {
      CHECK(t.flags & MMCKPT_TENSOR_MAPPED); /* already row-major: still zero-copy */
    }
    if (strcmp(t.name, "half_t") == 0) CHECK(t.dtype == MMCKPT_DTYPE_FLOAT16); /* assign keeps dtypes */
  }
  mmckpt_load_report_free(report);
  mmckpt_module_free(m);
}

static void without_the_flag_strides_are_the_checkpoints(const char *path, const manifest_row *rows, size_t count) {
  mmckpt_load_options lo = MMCKPT_LOAD_OPTIONS_INIT;
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = NULL;
  mmckpt_load_report *report = NULL;
  mmckpt_tensor t;
  unsigned char *gathered;
  char hex[65];
  CHECK_OK(mmckpt_checkpoint_open(path, NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_module_from_checkpoint(ckpt, &m));
  lo.flags |= MMCKPT_LOAD_ASSIGN;
  CHECK_OK(mmckpt_module_load(m, ckpt, &lo, &report));
  CHECK(mmckpt_load_report_copied_count(report) == 0);
  CHECK_OK(mmckpt_module_get(m, "conv1.weight", &t));
  CHECK(t.ndim == 4 && t.strides[0] == 1 && t.strides[1] == 10 && t.strides[2] == 30 && t.strides[3] == 90);
  CHECK(!(t.flags & MMCKPT_TENSOR_CONTIGUOUS) && (t.flags & MMCKPT_TENSOR_MAPPED));
  /* Reading `data` as if row-major is wrong (the facenet bug); gathering by strides is right. */
  CHECK(!data_is_row_major_values(rows, count, &t));
  gathered = gather_row_major(&t);
  sha256_hex(gathered, (size_t)t.numel * 4, hex);
  CHECK(strcmp(hex, row_of(rows, count, "conv1.weight")->sha256) == 0);
  free(gathered);
  mmckpt_load_report_free(report);
  mmckpt_module_free(m);
  mmckpt_checkpoint_close(ckpt);
}

/* With CONVERT, the float16 tensor is converted into the declared float32, row-major. */
static void convert_and_contiguous(const char *path) {
  mmckpt_load_options lo = MMCKPT_LOAD_OPTIONS_INIT;
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = NULL;
  mmckpt_load_report *report = NULL;
  mmckpt_tensor src, t;
  const int64_t shape[2] = {3, 5};
  unsigned char *gathered;
  float expected[15];
  size_t i;
  CHECK_OK(mmckpt_checkpoint_open(path, NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_module_new("Net", &m));
  CHECK_OK(mmckpt_module_add(m, "half_t", MMCKPT_DTYPE_FLOAT32, shape, 2, 0));
  lo.flags = MMCKPT_LOAD_ASSIGN | MMCKPT_LOAD_CONVERT | MMCKPT_LOAD_CONTIGUOUS;
  CHECK_OK(mmckpt_module_load(m, ckpt, &lo, &report));
  CHECK(mmckpt_load_report_copied_count(report) == 1);
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "half_t", &src));
  gathered = gather_row_major(&src);
  CHECK_OK(mmckpt_convert(expected, MMCKPT_DTYPE_FLOAT32, gathered, MMCKPT_DTYPE_FLOAT16, 15));
  free(gathered);
  CHECK_OK(mmckpt_module_get(m, "half_t", &t));
  CHECK(t.dtype == MMCKPT_DTYPE_FLOAT32 && (t.flags & MMCKPT_TENSOR_CONTIGUOUS));
  for (i = 0; i < 15; i++) CHECK(((const float *)t.data)[i] == expected[i]);
  mmckpt_load_report_free(report);
  mmckpt_module_free(m);
  mmckpt_checkpoint_close(ckpt);
}

/* Copy loads (materialize, then load without ASSIGN) always write row-major memory. */
static void copy_loads_are_row_major(const char *path, const manifest_row *rows, size_t count) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = NULL;
  mmckpt_load_options lo = MMCKPT_LOAD_OPTIONS_INIT;
  size_t i;
  CHECK_OK(mmckpt_checkpoint_open(path, NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_module_from_checkpoint(ckpt, &m));
  CHECK_OK(mmckpt_module_materialize(m));
  lo.flags |= MMCKPT_LOAD_CONTIGUOUS; /* accepted; changes nothing for a copy load */
  CHECK_OK(mmckpt_module_load(m, ckpt, &lo, NULL));
  for (i = 0; i < mmckpt_module_count(m); i++) {
    mmckpt_tensor t;
    CHECK_OK(mmckpt_module_at(m, i, &t));
    CHECK((t.flags & MMCKPT_TENSOR_CONTIGUOUS) && is_row_major_strides(&t));
    CHECK(data_is_row_major_values(rows, count, &t));
  }
  mmckpt_module_free(m);
  mmckpt_checkpoint_close(ckpt);
}

int main(int argc, char **argv) {
  size_t count = 0;
  manifest_row *rows;
  char path[4096];
  test_init(argc, argv);
  rows = load_manifest(&count);
  snprintf(path, sizeof path, "%s", data_path("fixtures/transposed.pt"));
  load_and_check(path, 0, MMCKPT_LOAD_ASSIGN | MMCKPT_LOAD_CONTIGUOUS, rows, count);
  load_and_check(path, MMCKPT_OPEN_READ, MMCKPT_LOAD_ASSIGN | MMCKPT_LOAD_CONTIGUOUS, rows, count);
  without_the_flag_strides_are_the_checkpoints(path, rows, count);
  copy_loads_are_row_major(path, rows, count);
  convert_and_contiguous(path);
  free(rows);
  return test_finish("test_contiguous");
}
