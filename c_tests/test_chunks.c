/* torch.distributed.checkpoint directories through the C ABI (tests/data/dcp, written by
   torch's dcp.save on 4 gloo processes): the directory opens as one checkpoint, each chunk
   (mmckpt_checkpoint_chunk_count / _chunk_at) holds its part of the whole tensor, a module
   entry of the global shape loads the assembled tensor, and slices (mmckpt_checkpoint_slice)
   equal the whole's rows and columns and outlive the checkpoint. */
#include "support.h"

/* Element (i, j) of a row-major 2-d buffer (1-d: j only, i == 0). */
static const unsigned char *at(const unsigned char *rows, int64_t cols, int64_t i, int64_t j,
                               size_t itemsize) {
  return rows + ((size_t)(i * cols + j)) * itemsize;
}

static mmckpt_checkpoint *open_dcp(const char *dir) {
  mmckpt_checkpoint *ckpt = NULL;
  CHECK_OK(mmckpt_checkpoint_open(data_path(dir), NULL, &ckpt));
  return ckpt;
}

static void test_chunks_are_parts_of_the_whole(void) {
  mmckpt_checkpoint *ckpt = open_dcp("data/dcp/rank4");
  size_t i, c, count = 0, chunked = 0;
  if (!ckpt) return;
  CHECK(strcmp(mmckpt_checkpoint_format(ckpt), "dcp") == 0);
  CHECK(mmckpt_checkpoint_tensor_count(ckpt) == 4);
  for (i = 0; i < mmckpt_checkpoint_tensor_count(ckpt); i++) {
    mmckpt_tensor whole;
    unsigned char *rows;
    size_t itemsize;
    int64_t cols;
    CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, i, &whole));
    CHECK_OK(mmckpt_checkpoint_chunk_count(ckpt, i, &count));
    CHECK(whole.ndim >= 1 && whole.ndim <= 2);
    rows = gather_row_major(&whole);
    itemsize = mmckpt_dtype_itemsize(whole.dtype);
    cols = whole.ndim == 2 ? whole.shape[1] : whole.shape[0];
    if (count > 1) chunked++;
    for (c = 0; c < count; c++) {
      mmckpt_chunk chunk;
      unsigned char *part;
      int64_t r, k, nrows, ncols;
      CHECK_OK(mmckpt_checkpoint_chunk_at(ckpt, i, c, &chunk));
      CHECK(chunk.ndim == whole.ndim);
      CHECK(chunk.sizes == chunk.tensor.shape);
      CHECK(strcmp(chunk.tensor.name, whole.name) == 0);
      part = gather_row_major(&chunk.tensor);
      nrows = whole.ndim == 2 ? chunk.sizes[0] : 1;
      ncols = whole.ndim == 2 ? chunk.sizes[1] : chunk.sizes[0];
      for (r = 0; r < nrows; r++)
        for (k = 0; k < ncols; k++) {
          int64_t gi = whole.ndim == 2 ? chunk.offsets[0] + r : 0;
          int64_t gj = (whole.ndim == 2 ? chunk.offsets[1] : chunk.offsets[0]) + k;
          CHECK(memcmp(at(part, ncols, r, k, itemsize), at(rows, cols, gi, gj, itemsize),
                       itemsize) == 0);
        }
      free(part);
    }
    {
      mmckpt_chunk past;
      CHECK_STATUS(mmckpt_checkpoint_chunk_at(ckpt, i, count, &past), MMCKPT_ERR_NOT_FOUND);
    }
    free(rows);
  }
  CHECK(chunked == 3); /* row, col and short are sharded; rep is saved whole */
  CHECK_STATUS(mmckpt_checkpoint_chunk_count(ckpt, 99, &count), MMCKPT_ERR_NOT_FOUND);
  CHECK_STATUS(mmckpt_checkpoint_chunk_count(ckpt, 0, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  mmckpt_checkpoint_close(ckpt);
}

static void test_module_loads_the_assembled_tensor(void) {
  mmckpt_checkpoint *ckpt = open_dcp("data/dcp/rank4");
  mmckpt_module *copied = NULL, *assigned = NULL;
  mmckpt_load_options copy = MMCKPT_LOAD_OPTIONS_INIT, assign = MMCKPT_LOAD_OPTIONS_INIT;
  mmckpt_tensor whole, a, b;
  const int64_t shape[2] = {3, 8};
  unsigned char *expected;
  if (!ckpt) return;
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "col", &whole));
  expected = gather_row_major(&whole);
  CHECK_OK(mmckpt_module_new("m", &copied));
  CHECK_OK(mmckpt_module_new("m", &assigned));
  CHECK_OK(mmckpt_module_add(copied, "col", MMCKPT_DTYPE_FLOAT16, shape, 2, 0));
  CHECK_OK(mmckpt_module_add(assigned, "col", MMCKPT_DTYPE_FLOAT16, shape, 2, 0));
  CHECK_OK(mmckpt_module_materialize(copied));
  /* Not strict: the module declares one of the checkpoint's four tensors. */
  copy.flags = 0;
  assign.flags = MMCKPT_LOAD_ASSIGN;
  CHECK_OK(mmckpt_module_load(copied, ckpt, &copy, NULL));
  CHECK_OK(mmckpt_module_load(assigned, ckpt, &assign, NULL));
  /* The assigned entry shares the assembled copy and outlives the checkpoint. */
  mmckpt_checkpoint_close(ckpt);
  CHECK_OK(mmckpt_module_get(copied, "col", &a));
  CHECK_OK(mmckpt_module_get(assigned, "col", &b));
  CHECK(memcmp(a.data, expected, 3 * 8 * 2) == 0);
  CHECK(memcmp(b.data, expected, 3 * 8 * 2) == 0);
  free(expected);
  mmckpt_module_free(copied);
  mmckpt_module_free(assigned);
}

static void test_slices(void) {
  mmckpt_checkpoint *ckpt = open_dcp("data/dcp/rank4");
  mmckpt_slice *inside = NULL, *crossing = NULL, *columns = NULL, *bad = NULL;
  mmckpt_tensor whole, s;
  mmckpt_chunk chunk;
  unsigned char *rows, *got;
  if (!ckpt) return;
  /* row: float64 [8, 4], Shard(0) over 4 ranks: chunk 1 holds rows 2..4. */
  CHECK_OK(mmckpt_checkpoint_chunk_at(ckpt, 0, 1, &chunk));
  CHECK_OK(mmckpt_checkpoint_slice(ckpt, "row", 0, 2, 2, &inside));
  CHECK_OK(mmckpt_checkpoint_slice(ckpt, "row", 0, 1, 4, &crossing));
  CHECK_OK(mmckpt_checkpoint_slice(ckpt, "row", -1, 1, 2, &columns));
  CHECK_OK(mmckpt_slice_tensor(inside, &s));
  CHECK(s.data == chunk.tensor.data && s.storage_id == chunk.tensor.storage_id);
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "row", &whole));
  rows = gather_row_major(&whole);
  /* Errors, worded as torch's narrow. */
  CHECK_STATUS(mmckpt_checkpoint_slice(ckpt, "row", 2, 0, 1, &bad), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("Dimension out of range (expected to be in range of [-2, 1], but got 2)");
  CHECK_STATUS(mmckpt_checkpoint_slice(ckpt, "row", 0, 5, 4, &bad), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("start (5) + length (4) exceeds dimension size (8).");
  CHECK_STATUS(mmckpt_checkpoint_slice(ckpt, "nope", 0, 0, 1, &bad), MMCKPT_ERR_NOT_FOUND);
  CHECK_STATUS(mmckpt_checkpoint_slice(ckpt, "row", 0, 0, 1, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK(bad == NULL);
  /* Slices stay valid after their checkpoint is closed. */
  mmckpt_checkpoint_close(ckpt);
  CHECK_OK(mmckpt_slice_tensor(inside, &s));
  CHECK(s.ndim == 2 && s.shape[0] == 2 && s.shape[1] == 4);
  got = gather_row_major(&s);
  CHECK(memcmp(got, rows + 2 * 4 * 8, 2 * 4 * 8) == 0);
  free(got);
  CHECK_OK(mmckpt_slice_tensor(crossing, &s));
  CHECK(s.shape[0] == 4 && (s.flags & MMCKPT_TENSOR_MAPPED) == 0);
  got = gather_row_major(&s);
  CHECK(memcmp(got, rows + 1 * 4 * 8, 4 * 4 * 8) == 0);
  free(got);
  CHECK_OK(mmckpt_slice_tensor(columns, &s));
  CHECK(s.shape[0] == 8 && s.shape[1] == 2);
  got = gather_row_major(&s);
  {
    int r;
    for (r = 0; r < 8; r++) CHECK(memcmp(got + r * 2 * 8, rows + (r * 4 + 1) * 8, 2 * 8) == 0);
  }
  free(got);
  free(rows);
  mmckpt_slice_free(inside);
  mmckpt_slice_free(crossing);
  mmckpt_slice_free(columns);
  mmckpt_slice_free(NULL);
}

static void test_single_file_slices_are_views(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_slice *slice = NULL;
  mmckpt_tensor t, s;
  size_t count = 0;
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/forms.pt"), NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "transpose", &t));
  CHECK_OK(mmckpt_checkpoint_chunk_count(ckpt, 0, &count));
  CHECK(count == 1);
  CHECK_OK(mmckpt_checkpoint_slice(ckpt, "transpose", 1, 1, 1, &slice));
  CHECK_OK(mmckpt_slice_tensor(slice, &s));
  CHECK(s.strides[0] == t.strides[0] && s.strides[1] == t.strides[1]);
  CHECK(s.storage_offset == t.storage_offset + t.strides[1]);
  CHECK(s.storage_id == t.storage_id);
  /* The slice's description and bytes stay valid after the checkpoint's (t's) are gone. */
  mmckpt_checkpoint_close(ckpt);
  CHECK_OK(mmckpt_slice_tensor(slice, &s));
  CHECK(s.ndim == 2 && s.shape[1] == 1 && s.data != NULL);
  free(gather_row_major(&s));
  mmckpt_slice_free(slice);
}

static void test_broken_directories(void) {
  mmckpt_checkpoint *ckpt = NULL;
  CHECK_STATUS(mmckpt_checkpoint_open(data_path("data/dcp/bad/gap"), NULL, &ckpt),
               MMCKPT_ERR_FORMAT);
  CHECK_ERROR_MENTIONS("do not tile its shape [8, 6]");
  CHECK_STATUS(mmckpt_checkpoint_open(data_path("data/dcp/bad/missing_file"), NULL, &ckpt),
               MMCKPT_ERR_IO);
  CHECK_ERROR_MENTIONS("__1_0.distcp");
  CHECK(ckpt == NULL);
}

int main(int argc, char **argv) {
  test_init(argc, argv);
  test_chunks_are_parts_of_the_whole();
  test_module_loads_the_assembled_tensor();
  test_slices();
  test_single_file_slices_are_views();
  test_broken_directories();
  return test_finish("test_chunks");
}
