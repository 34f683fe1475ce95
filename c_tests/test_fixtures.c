/* Every tensor of the torch-written fixtures, through the C ABI, equals the manifest: dtype,
   shape, strides, offset, values (SHA-256 of row-major bytes), aliasing, and — for mapped
   tensors — a data pointer inside the mapping at the recorded file offset. */
#include "support.h"

static void check_file(const manifest_row *rows, size_t count, const char *file, uint32_t flags) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_open_options opts;
  unsigned char *bytes;
  size_t len = 0, i, k = 0;
  uint64_t group_ids[256];
  int torchscript = strncmp(file, "script", 6) == 0;
  char path[512];

  snprintf(path, sizeof path, "%s", data_path("fixtures/"));
  strncat(path, file, sizeof path - strlen(path) - 1);
  bytes = read_file(path, &len);
  CHECK(bytes != NULL);
  mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION);
  opts.flags = flags;
  CHECK_OK(mmckpt_checkpoint_open(path, &opts, &ckpt));
  if (!ckpt) {
    fprintf(stderr, "  (while opening %s)\n", file);
    free(bytes);
    return;
  }
  memset(group_ids, 0, sizeof group_ids);
  for (i = 0; i < count; i++) {
    const manifest_row *r = &rows[i];
    mmckpt_tensor t, by_name;
    unsigned char *elems;
    char hex[65];
    int d;
    if (strcmp(r->file, file) != 0) continue;
    CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, k, &t));
    k++;
    if (!t.name) continue;
    if (strcmp(t.name, r->name) != 0) {
      fprintf(stderr, "%s: entry %zu is %s, manifest says %s\n", file, k - 1, t.name, r->name);
      test_failures++;
      continue;
    }
    CHECK(strcmp(mmckpt_dtype_name(t.dtype), r->dtype) == 0);
    CHECK(t.ndim == (uint32_t)r->ndim);
    CHECK(t.ndim == 0 ? (t.shape == NULL && t.strides == NULL) : (t.shape != NULL && t.strides != NULL));
    for (d = 0; d < r->ndim && d < (int)t.ndim; d++) {
      CHECK(t.shape[d] == r->shape[d]);
      CHECK(t.strides[d] == r->stride[d]);
    }
    CHECK(t.storage_offset == r->storage_offset);
    CHECK(t.numel == r->numel);
    CHECK(t.data != NULL);
    CHECK(t.storage_id != 0);
    CHECK(((uintptr_t)t.data % (mmckpt_dtype_itemsize(t.dtype) < 8 ? mmckpt_dtype_itemsize(t.dtype) : 8)) == 0);
    elems = gather_row_major(&t);
    sha256_hex(elems, (size_t)t.numel * mmckpt_dtype_itemsize(t.dtype), hex);
    if (strcmp(hex, r->sha256) != 0) {
      fprintf(stderr, "%s: %s: values differ from what torch wrote\n", file, r->name);
      test_failures++;
    }
    free(elems);
    if (!torchscript) {
      CHECK(!!(t.flags & MMCKPT_TENSOR_PARAMETER) == r->is_parameter);
      CHECK(!!(t.flags & MMCKPT_TENSOR_REQUIRES_GRAD) == r->requires_grad);
    }
    /* Aliasing: one storage id per torch storage, distinct across storages. */
    if (r->storage_group < 256) {
      if (group_ids[r->storage_group] == 0) {
        int g;
        for (g = 0; g < 256; g++) CHECK(group_ids[g] != t.storage_id);
        group_ids[r->storage_group] = t.storage_id;
      }
      CHECK(group_ids[r->storage_group] == t.storage_id);
    }
    if (flags & MMCKPT_OPEN_READ) {
      CHECK(!(t.flags & MMCKPT_TENSOR_MAPPED));
      CHECK(t.file_offset == MMCKPT_NO_OFFSET);
    } else if (t.flags & MMCKPT_TENSOR_MAPPED) {
      /* The bytes at the recorded file offset are the bytes behind the pointer. */
      CHECK(t.file_offset != MMCKPT_NO_OFFSET && t.file_offset + t.nbytes <= len);
      if (t.file_offset + t.nbytes <= len)
        CHECK(memcmp(bytes + t.file_offset, t.data, (size_t)t.nbytes) == 0);
    }
    CHECK_OK(mmckpt_checkpoint_tensor(ckpt, r->name, &by_name));
    CHECK(by_name.data == t.data && by_name.storage_id == t.storage_id);
  }
  CHECK(mmckpt_checkpoint_tensor_count(ckpt) == k);
  mmckpt_checkpoint_close(ckpt);
  free(bytes);
}

static void test_views_and_ties(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_tensor a, b, s, base;
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/forms.pt"), NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "embed.weight", &a));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "lm_head.weight", &b));
  CHECK(a.data == b.data && a.storage_id == b.storage_id);
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "shared.a", &s));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "shared.b", &base));
  CHECK(s.storage_id == base.storage_id);
  /* data = storage start + storage_offset * itemsize, for views of one storage */
  CHECK((const char *)s.data - s.storage_offset * 4 == (const char *)base.data - base.storage_offset * 4);
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "scalar", &s));
  CHECK(s.ndim == 0 && s.numel == 1 && s.shape == NULL);
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "empty", &s));
  CHECK(s.numel == 0 && s.nbytes == 0 && s.ndim == 2 && s.shape[0] == 0);
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "transpose", &s));
  CHECK(!(s.flags & MMCKPT_TENSOR_CONTIGUOUS));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "contiguous", &s));
  CHECK(s.flags & MMCKPT_TENSOR_CONTIGUOUS);
  CHECK(s.flags & MMCKPT_TENSOR_MAPPED);
  mmckpt_checkpoint_close(ckpt);
}

static void test_root(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_open_options opts;
  mmckpt_tensor t;
  mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION);
  opts.root = "model";
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/nested.pt"), &opts, &ckpt));
  if (!ckpt) return;
  CHECK(mmckpt_checkpoint_tensor_count(ckpt) == 4);
  CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, 0, &t));
  CHECK(strcmp(t.name, "fc.weight") == 0);
  mmckpt_checkpoint_close(ckpt);
  ckpt = NULL;
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/nested.pt"), NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "optimizer.state.0.exp_avg", &t));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "model.fc.weight", &t));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "args.scale", &t));
  mmckpt_checkpoint_close(ckpt);
  ckpt = NULL;
  opts.root = "does.not.exist";
  CHECK_STATUS(mmckpt_checkpoint_open(data_path("fixtures/nested.pt"), &opts, &ckpt), MMCKPT_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("does");
  CHECK(ckpt == NULL);
}

/* exotic.pt: quantized, sparse, nested and subclass tensors fail alone (UNSUPPORTED, naming the
   tensor and its kind); the plain tensors load; lazy conj/neg bits are flags. */
static void test_unsupported_kinds(void) {
  static const struct { const char *name, *kind; } bad[] = {
      {"quantized", "quantized"}, {"sparse", "sparse"}, {"nested", "nested"}, {"subclass", "subclass"}};
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_tensor t;
  size_t i;
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/exotic.pt"), NULL, &ckpt));
  if (!ckpt) return;
  CHECK(mmckpt_checkpoint_tensor_count(ckpt) == 8);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_STATUS(mmckpt_checkpoint_tensor(ckpt, bad[i].name, &t), MMCKPT_ERR_UNSUPPORTED);
    CHECK_ERROR_MENTIONS(bad[i].name);
    CHECK_ERROR_MENTIONS(bad[i].kind);
  }
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "plain", &t));
  CHECK(t.data != NULL && t.numel == 6 && (t.flags & MMCKPT_TENSOR_MAPPED));
  CHECK(!(t.flags & (MMCKPT_TENSOR_CONJ | MMCKPT_TENSOR_NEG)));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "plain_int", &t));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "conj", &t));
  CHECK((t.flags & MMCKPT_TENSOR_CONJ) && !(t.flags & MMCKPT_TENSOR_NEG));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "neg", &t));
  CHECK((t.flags & MMCKPT_TENSOR_NEG) && !(t.flags & MMCKPT_TENSOR_CONJ));
  mmckpt_checkpoint_close(ckpt);
}

/* A shard index opens as one checkpoint; its tensors point into the shard files. */
static void test_sharded(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_tensor t;
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/shards/pytorch_model.bin.index.json"), NULL, &ckpt));
  if (!ckpt) return;
  CHECK(strcmp(mmckpt_checkpoint_format(ckpt), "sharded") == 0);
  CHECK(mmckpt_checkpoint_tensor_count(ckpt) == 5);
  CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, 0, &t));
  CHECK(strcmp(t.name, "model.embed.weight") == 0 && (t.flags & MMCKPT_TENSOR_MAPPED));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "lm_head.weight", &t));
  CHECK(t.numel == 24 && t.data != NULL);
  mmckpt_checkpoint_close(ckpt);
}

int main(int argc, char **argv) {
  static const char *files[] = {"dtypes.pt",        "forms.pt",         "nested.pt",
                                "proto4.pt",        "align4096.pt",     "script.pt",
                                "recipe.pt",        "legacy.pt",        "legacy_proto4.pt",
                                "legacy_odd.pt",    "script_nested.pt", "script_traced.pt",
                                "bigendian.pt",     "location.pt",      "script_attr.pt"};
  size_t count = 0, i;
  manifest_row *rows;
  test_init(argc, argv);
  rows = load_manifest(&count);
  CHECK(count > 50);
  for (i = 0; i < sizeof files / sizeof files[0]; i++) {
    /* Under valgrind, skip the 40 MB recipe (hashing it there takes minutes). */
    if (getenv("MMCKPT_TEST_SKIP_LARGE") && strcmp(files[i], "recipe.pt") == 0) continue;
    check_file(rows, count, files[i], 0);
    check_file(rows, count, files[i], MMCKPT_OPEN_READ);
    check_file(rows, count, files[i], MMCKPT_OPEN_POPULATE);
  }
  free(rows);
  test_views_and_ties();
  test_root();
  test_unsupported_kinds();
  test_sharded();
  return test_finish("test_fixtures");
}
