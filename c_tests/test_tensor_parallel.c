/* Tensor-parallel loads through the C ABI (mmckpt_load_options version 2): every rank of 4
   loads its share of tests/data/dcp/rank4 (torch's dcp.save on 4 gloo processes) and of a
   torch-written .pth, column-parallel (dim 0) and row-parallel (dim 1), by assign and by copy;
   each share equals the rows or columns of the whole tensor torch.chunk gives that rank;
   replicated entries load whole; shape and option errors change nothing. */
#include "support.h"

/* torch.chunk(t, world, dim)[rank] along a dimension of size n: 0 when the rank has none. */
static int torch_chunk(int64_t n, int64_t world, int64_t rank, int64_t *start, int64_t *length) {
  int64_t size = (n + world - 1) / world;
  *start = rank * size;
  if (n == 0) {
    *start = 0;
    *length = 0;
    return 1;
  }
  if (*start >= n) return 0;
  *length = n - *start < size ? n - *start : size;
  return 1;
}

/* Does entry `got` (row-major gathered) equal rows/columns [start, start + length) along
   `dim` of the 2-d row-major `whole` of shape rows x cols? */
static int equals_share(const unsigned char *got, const unsigned char *whole, int64_t rows,
                        int64_t cols, int dim, int64_t start, int64_t length, size_t itemsize) {
  int64_t i, j;
  int64_t out_cols = dim == 1 ? length : cols;
  int64_t out_rows = dim == 0 ? length : rows;
  for (i = 0; i < out_rows; i++)
    for (j = 0; j < out_cols; j++) {
      int64_t gi = dim == 0 ? start + i : i;
      int64_t gj = dim == 1 ? start + j : j;
      if (memcmp(got + (size_t)(i * out_cols + j) * itemsize, whole + (size_t)(gi * cols + gj) * itemsize,
                 itemsize) != 0)
        return 0;
    }
  return 1;
}

/* Every rank of `world` loads `name` (2-d) of `path` split along `dim`, by assign and by copy. */
static void check_every_rank(const char *path, const char *name, int dim, uint32_t world) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_tensor whole;
  unsigned char *expected;
  size_t itemsize;
  uint32_t rank;
  int copy;
  CHECK_OK(mmckpt_checkpoint_open(data_path(path), NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, name, &whole));
  CHECK(whole.ndim == 2);
  expected = gather_row_major(&whole);
  itemsize = mmckpt_dtype_itemsize(whole.dtype);
  for (rank = 0; rank < world; rank++)
    for (copy = 0; copy < 2; copy++) {
      mmckpt_checkpoint *fresh = NULL;
      mmckpt_module *m = NULL;
      mmckpt_load_options opts = MMCKPT_LOAD_OPTIONS_INIT;
      mmckpt_split_rule rule;
      mmckpt_tensor t;
      int64_t start, length, local[2];
      unsigned char *got;
      if (!torch_chunk(whole.shape[dim], world, rank, &start, &length)) continue;
      local[0] = whole.shape[0];
      local[1] = whole.shape[1];
      local[dim] = length;
      /* A fresh open each time: a distributed tensor not assembled yet. */
      CHECK_OK(mmckpt_checkpoint_open(data_path(path), NULL, &fresh));
      CHECK_OK(mmckpt_module_new("Net", &m));
      CHECK_OK(mmckpt_module_add(m, name, whole.dtype, local, 2, 0));
      if (copy) CHECK_OK(mmckpt_module_materialize(m));
      rule.pattern = "*";
      rule.dim = dim;
      opts.flags = copy ? 0 : MMCKPT_LOAD_ASSIGN;
      opts.tp_rank = rank;
      opts.tp_world = world;
      opts.split_rules = &rule;
      opts.split_rule_count = 1;
      CHECK_OK(mmckpt_module_load(m, fresh, &opts, NULL));
      /* Views outlive the checkpoint. */
      mmckpt_checkpoint_close(fresh);
      CHECK_OK(mmckpt_module_get(m, name, &t));
      CHECK(t.shape[0] == local[0] && t.shape[1] == local[1]);
      if (copy || dim == 0) CHECK((t.flags & MMCKPT_TENSOR_CONTIGUOUS) != 0);
      got = gather_row_major(&t);
      if (!equals_share(got, expected, whole.shape[0], whole.shape[1], dim, start, length, itemsize)) {
        fprintf(stderr, "%s %s dim %d rank %u/%u copy %d: not torch.chunk's share\n", path, name, dim,
                (unsigned)rank, (unsigned)world, copy);
        test_failures++;
      }
      free(got);
      mmckpt_module_free(m);
    }
  free(expected);
  mmckpt_checkpoint_close(ckpt);
}

static void test_shares(void) {
  /* rank4: row float64 [8, 4] Shard(0); col float16 [3, 8] Shard(1); short int64 [3, 2]. */
  check_every_rank("data/dcp/rank4", "row", 0, 4);
  check_every_rank("data/dcp/rank4", "row", 1, 4);
  check_every_rank("data/dcp/rank4", "col", 1, 4);
  check_every_rank("data/dcp/rank4", "col", 0, 2);
  check_every_rank("data/dcp/rank4", "short", 0, 4);
  check_every_rank("data/dcp/rank2", "uneven", 0, 2);
  /* A torch-written .pth: dtypes.pt holds [3, 5] tensors; transposed.pt a transposed one. */
  check_every_rank("fixtures/dtypes.pt", "float32", 0, 2);
  check_every_rank("fixtures/dtypes.pt", "bfloat16", 1, 4);
  check_every_rank("fixtures/transposed.pt", "fc.weight", 1, 4);
}

/* Column- and row-parallel rules at once, replicated entries whole, first rule wins. */
static void test_rules_and_replicas(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = NULL;
  mmckpt_load_options opts = MMCKPT_LOAD_OPTIONS_INIT;
  mmckpt_split_rule rules[3];
  mmckpt_load_report *report = NULL;
  mmckpt_tensor whole, t;
  const int64_t row[2] = {2, 4}, col[2] = {3, 2}, rep[1] = {5}, shrt[2] = {3, 2};
  unsigned char *a, *b;
  CHECK_OK(mmckpt_checkpoint_open(data_path("data/dcp/rank4"), NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_module_new("Net", &m));
  CHECK_OK(mmckpt_module_add(m, "col", MMCKPT_DTYPE_FLOAT16, col, 2, 0));
  CHECK_OK(mmckpt_module_add(m, "rep", MMCKPT_DTYPE_INT8, rep, 1, 0));
  CHECK_OK(mmckpt_module_add(m, "row", MMCKPT_DTYPE_FLOAT64, row, 2, 0));
  CHECK_OK(mmckpt_module_add(m, "short", MMCKPT_DTYPE_INT64, shrt, 2, 0));
  rules[0].pattern = "row";
  rules[0].dim = 0;
  rules[1].pattern = "c*";
  rules[1].dim = -1;
  rules[2].pattern = "col";
  rules[2].dim = 0; /* never reached: "c*" matches first */
  opts.flags |= MMCKPT_LOAD_ASSIGN;
  opts.tp_rank = 2;
  opts.tp_world = 4;
  opts.split_rules = rules;
  opts.split_rule_count = 3;
  CHECK_OK(mmckpt_module_load(m, ckpt, &opts, &report));
  CHECK(strcmp(mmckpt_load_report_message(report), "<All keys matched successfully>") == 0);
  mmckpt_load_report_free(report);
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "rep", &whole));
  CHECK_OK(mmckpt_module_get(m, "rep", &t));
  CHECK(t.shape[0] == 5 && memcmp(t.data, whole.data, 5) == 0);
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "short", &whole));
  CHECK_OK(mmckpt_module_get(m, "short", &t));
  a = gather_row_major(&whole);
  b = gather_row_major(&t);
  CHECK(memcmp(a, b, 3 * 2 * 8) == 0);
  free(a);
  free(b);
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "col", &whole));
  CHECK_OK(mmckpt_module_get(m, "col", &t));
  a = gather_row_major(&whole);
  b = gather_row_major(&t);
  CHECK(equals_share(b, a, 3, 8, 1, 4, 2, 2));
  free(a);
  free(b);
  mmckpt_module_free(m);
  mmckpt_checkpoint_close(ckpt);
}

static void test_errors(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = NULL;
  mmckpt_load_options opts = MMCKPT_LOAD_OPTIONS_INIT;
  mmckpt_split_rule rule;
  mmckpt_tensor t;
  const int64_t wrong[2] = {3, 2};
  size_t i;
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/dtypes.pt"), NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_module_new("Net", &m));
  CHECK_OK(mmckpt_module_add(m, "float32", MMCKPT_DTYPE_FLOAT32, wrong, 2, 0));
  CHECK_OK(mmckpt_module_materialize(m));
  rule.pattern = "float*";
  rule.dim = 1;
  opts.flags = 0;
  opts.tp_rank = 0;
  opts.tp_world = 2;
  opts.split_rules = &rule;
  opts.split_rule_count = 1;
  /* [3, 5] on dim 1 over 2 ranks: rank 0 holds [3, 3], not [3, 2]. */
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, NULL), MMCKPT_ERR_SHAPE_MISMATCH);
  CHECK_ERROR_MENTIONS("size mismatch for float32: copying a param with shape torch.Size([3, 5]) from "
                       "checkpoint, split for tensor-parallel rank 0 of world size 2 along dim 1");
  CHECK_ERROR_MENTIONS("into a shard of shape torch.Size([3, 3]), the shape in current model is "
                       "torch.Size([3, 2]).");
  opts.tp_rank = 2;
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, NULL), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("rank 2 is out of range for world size 2");
  opts.tp_rank = 1;
  opts.tp_world = 0;
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, NULL), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("world size is 0");
  opts.tp_world = 2;
  rule.dim = 2;
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, NULL), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("dimension 2 is out of range");
  opts.split_rules = NULL;
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("opts.split_rules");
  /* Nothing was written. */
  CHECK_OK(mmckpt_module_get(m, "float32", &t));
  for (i = 0; i < 3 * 2 * 4; i++) CHECK(((const unsigned char *)t.data)[i] == 0);
  /* Rank 1's share, [3, 2], fits. */
  opts.split_rules = &rule;
  rule.dim = -1;
  CHECK_OK(mmckpt_module_load(m, ckpt, &opts, NULL));
  mmckpt_module_free(m);
  mmckpt_checkpoint_close(ckpt);
}

int main(int argc, char **argv) {
  test_init(argc, argv);
  test_shares();
  test_rules_and_replicas();
  test_errors();
  return test_finish("test_tensor_parallel");
}
