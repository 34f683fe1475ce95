/* DLPack exports: every dtype's code, the layout (strides, byte_offset), the flags, and the
 * lifetimes (an export outlives its checkpoint and module; each deleter frees its own). Run
 * under ASan and valgrind by the ctest runs, which catch a use after free or a leak. */
#include "support.h"
#include "dlpack.h"

#include <stdint.h>

static mmckpt_checkpoint *open_fixture(const char *name, uint32_t flags) {
  mmckpt_open_options opts = MMCKPT_OPEN_OPTIONS_INIT;
  mmckpt_checkpoint *ckpt = NULL;
  opts.flags = flags;
  CHECK_OK(mmckpt_checkpoint_open(data_path(name), &opts, &ckpt));
  return ckpt;
}

static size_t index_of(const mmckpt_checkpoint *ckpt, const char *name) {
  size_t i, n = mmckpt_checkpoint_tensor_count(ckpt);
  for (i = 0; i < n; i++) {
    if (strcmp(mmckpt_checkpoint_name_at(ckpt, i), name) == 0) return i;
  }
  fprintf(stderr, "no tensor '%s'\n", name);
  test_failures++;
  return 0;
}

struct expected_code {
  const char *name;
  uint8_t code, bits;
  uint16_t lanes;
};

/* As torch's own __dlpack__ writes each dtype. */
static const struct expected_code CODES[] = {
    {"float32", kDLFloat, 32, 1},          {"float64", kDLFloat, 64, 1},
    {"float16", kDLFloat, 16, 1},          {"bfloat16", kDLBfloat, 16, 1},
    {"int8", kDLInt, 8, 1},                {"uint8", kDLUInt, 8, 1},
    {"int16", kDLInt, 16, 1},              {"int32", kDLInt, 32, 1},
    {"int64", kDLInt, 64, 1},              {"bool", kDLBool, 8, 1},
    {"complex64", kDLComplex, 64, 1},      {"complex128", kDLComplex, 128, 1},
    {"uint16", kDLUInt, 16, 1},            {"uint32", kDLUInt, 32, 1},
    {"uint64", kDLUInt, 64, 1},            {"complex32", kDLComplex, 32, 1},
    {"float8_e4m3fn", kDLFloat8_e4m3fn, 8, 1},
    {"float8_e5m2", kDLFloat8_e5m2, 8, 1},
    {"float8_e4m3fnuz", kDLFloat8_e4m3fnuz, 8, 1},
    {"float8_e5m2fnuz", kDLFloat8_e5m2fnuz, 8, 1},
    {"float8_e8m0fnu", kDLFloat8_e8m0fnu, 8, 1},
    {"float4_e2m1fn_x2", kDLFloat4_e2m1fn, 4, 2},
};

/* The export describes exactly the bytes mmckpt_tensor describes. */
static void check_matches(const DLManagedTensorVersioned *dl, const mmckpt_tensor *t) {
  uint32_t d;
  CHECK(dl->version.major == DLPACK_MAJOR_VERSION);
  CHECK(dl->dl_tensor.device.device_type == kDLCPU);
  CHECK(dl->dl_tensor.ndim == (int32_t)t->ndim);
  CHECK((const char *)dl->dl_tensor.data + dl->dl_tensor.byte_offset == (const char *)t->data);
  CHECK(dl->dl_tensor.byte_offset ==
        (uint64_t)t->storage_offset * mmckpt_dtype_itemsize(t->dtype));
  for (d = 0; d < t->ndim; d++) {
    CHECK(dl->dl_tensor.shape[d] == t->shape[d]);
    CHECK(dl->dl_tensor.strides[d] == t->strides[d]);
  }
}

static void every_dtype_has_torchs_code(void) {
  mmckpt_checkpoint *ckpt = open_fixture("fixtures/dtypes.pt", 0);
  size_t i;
  DLManagedTensorVersioned *dl = NULL;
  for (i = 0; i < sizeof CODES / sizeof CODES[0]; i++) {
    size_t index = index_of(ckpt, CODES[i].name);
    mmckpt_tensor t;
    dl = NULL;
    CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, index, &t));
    CHECK_OK(mmckpt_checkpoint_tensor_to_dlpack(ckpt, index, &dl));
    if (!dl) continue;
    if (dl->dl_tensor.dtype.code != CODES[i].code || dl->dl_tensor.dtype.bits != CODES[i].bits ||
        dl->dl_tensor.dtype.lanes != CODES[i].lanes) {
      fprintf(stderr, "%s: code %u bits %u lanes %u\n", CODES[i].name,
              dl->dl_tensor.dtype.code, dl->dl_tensor.dtype.bits, dl->dl_tensor.dtype.lanes);
      test_failures++;
    }
    CHECK(dl->flags == DLPACK_FLAG_BITMASK_READ_ONLY);
    check_matches(dl, &t);
    dl->deleter(dl);
  }
  /* torch's bits types have no DLPack code: refused, naming the dtype; *out untouched. */
  dl = NULL;
  CHECK_STATUS(mmckpt_checkpoint_tensor_to_dlpack(ckpt, index_of(ckpt, "bits8"), &dl),
               MMCKPT_ERR_UNSUPPORTED);
  CHECK_ERROR_MENTIONS("bits8");
  CHECK(dl == NULL);
  CHECK_STATUS(mmckpt_checkpoint_tensor_to_dlpack(ckpt, 1000, &dl), MMCKPT_ERR_NOT_FOUND);
  CHECK_STATUS(mmckpt_checkpoint_tensor_to_dlpack(NULL, 0, &dl), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_tensor_to_dlpack(ckpt, 0, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  mmckpt_checkpoint_close(ckpt);
}

/* Strided views, offsets, 0-d and empty tensors keep their layout; the exports outlive the
 * checkpoint and read the same bytes after it is closed. */
static void layouts_and_lifetime(void) {
  static const char *const NAMES[] = {"scalar", "empty", "slice", "transpose", "expanded",
                                      "shared.a", "shared.b"};
  enum { N = sizeof NAMES / sizeof NAMES[0] };
  DLManagedTensorVersioned *dl[N];
  char digest[N][65];
  size_t i;
  mmckpt_checkpoint *ckpt = open_fixture("fixtures/forms.pt", 0);
  for (i = 0; i < N; i++) {
    mmckpt_tensor t;
    size_t index = index_of(ckpt, NAMES[i]);
    dl[i] = NULL;
    CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, index, &t));
    CHECK_OK(mmckpt_checkpoint_tensor_to_dlpack(ckpt, index, &dl[i]));
    if (!dl[i]) return;
    check_matches(dl[i], &t);
    CHECK((t.ndim == 0) == (dl[i]->dl_tensor.shape == NULL));
    sha256_hex(t.data, (size_t)t.nbytes, digest[i]);
  }
  /* Two views of one storage share its start. */
  CHECK(dl[5]->dl_tensor.data == dl[6]->dl_tensor.data);
  mmckpt_checkpoint_close(ckpt);
  for (i = 0; i < N; i++) {
    char again[65];
    const DLTensor *t = &dl[i]->dl_tensor;
    /* nbytes as mmckpt computed it: re-derive from the shape and strides. */
    uint64_t span = 0;
    int32_t d;
    int empty = 0;
    for (d = 0; d < t->ndim; d++) {
      if (t->shape[d] == 0) empty = 1;
      span += (uint64_t)(t->shape[d] - 1) * (uint64_t)t->strides[d];
    }
    span = empty ? 0 : (span + 1) * (t->dtype.bits * t->dtype.lanes / 8);
    sha256_hex((const char *)t->data + t->byte_offset, (size_t)span, again);
    CHECK(strcmp(again, digest[i]) == 0);
    dl[i]->deleter(dl[i]);
  }
}

/* A legacy storage that had to be copied (misaligned): the export holds the copy, not the
 * mapping, and is not flagged as a copy of its own (the checkpoint shares it). */
static void copied_storage_outlives_close(void) {
  mmckpt_checkpoint *ckpt = open_fixture("fixtures/legacy_odd.pt", 0);
  size_t i, n = mmckpt_checkpoint_tensor_count(ckpt), copied = 0;
  for (i = 0; i < n; i++) {
    mmckpt_tensor t;
    DLManagedTensorVersioned *dl = NULL;
    if (mmckpt_checkpoint_tensor_at(ckpt, i, &t) != MMCKPT_OK) continue;
    if (t.flags & MMCKPT_TENSOR_MAPPED) continue;
    copied++;
    CHECK_OK(mmckpt_checkpoint_tensor_to_dlpack(ckpt, i, &dl));
    if (!dl) continue;
    check_matches(dl, &t);
    CHECK(dl->flags == DLPACK_FLAG_BITMASK_READ_ONLY);
    {
      char before[65], after[65];
      sha256_hex(t.data, (size_t)t.nbytes, before);
      mmckpt_checkpoint_close(ckpt);
      sha256_hex((const char *)dl->dl_tensor.data + dl->dl_tensor.byte_offset, (size_t)t.nbytes,
                 after);
      CHECK(strcmp(before, after) == 0);
      dl->deleter(dl);
      ckpt = open_fixture("fixtures/legacy_odd.pt", 0);
    }
  }
  CHECK(copied > 0);
  mmckpt_checkpoint_close(ckpt);
}

/* Module entries: an assign-loaded entry shares the mapping and outlives both the module and
 * the checkpoint; a materialized (copy-loaded) entry is exported as a writable copy. */
static void module_entries(void) {
  mmckpt_checkpoint *ckpt = open_fixture("fixtures/proto4.pt", 0);
  mmckpt_module *assigned = NULL, *copied = NULL;
  mmckpt_load_options opts = MMCKPT_LOAD_OPTIONS_INIT;
  DLManagedTensorVersioned *shared = NULL, *copy = NULL, *meta = NULL;
  mmckpt_tensor t, e;
  CHECK_OK(mmckpt_module_from_checkpoint(ckpt, &assigned));
  CHECK_OK(mmckpt_module_from_checkpoint(ckpt, &copied));
  CHECK_STATUS(mmckpt_module_entry_to_dlpack(assigned, 0, &meta), MMCKPT_ERR_STATE);
  CHECK_ERROR_MENTIONS("meta");
  CHECK_STATUS(mmckpt_module_entry_to_dlpack(assigned, 999, &meta), MMCKPT_ERR_NOT_FOUND);
  CHECK(meta == NULL);
  opts.flags = MMCKPT_LOAD_ASSIGN | MMCKPT_LOAD_STRICT;
  CHECK_OK(mmckpt_module_load(assigned, ckpt, &opts, NULL));
  CHECK_OK(mmckpt_module_materialize(copied));
  opts.flags = MMCKPT_LOAD_STRICT;
  CHECK_OK(mmckpt_module_load(copied, ckpt, &opts, NULL));
  CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, 0, &t));
  CHECK_OK(mmckpt_module_at(assigned, 0, &e));
  CHECK_OK(mmckpt_module_entry_to_dlpack(assigned, 0, &shared));
  CHECK_OK(mmckpt_module_entry_to_dlpack(copied, 0, &copy));
  if (!shared || !copy) return;
  check_matches(shared, &e);
  CHECK((const char *)shared->dl_tensor.data + shared->dl_tensor.byte_offset == t.data);
  CHECK(shared->flags == DLPACK_FLAG_BITMASK_READ_ONLY);
  CHECK(copy->flags == DLPACK_FLAG_BITMASK_IS_COPIED);
  CHECK(copy->dl_tensor.byte_offset == 0);
  CHECK(memcmp(copy->dl_tensor.data, t.data, (size_t)t.nbytes) == 0);
  mmckpt_module_free(assigned);
  mmckpt_module_free(copied);
  {
    char before[65], after[65];
    sha256_hex(t.data, (size_t)t.nbytes, before);
    mmckpt_checkpoint_close(ckpt);
    sha256_hex((const char *)shared->dl_tensor.data + shared->dl_tensor.byte_offset,
               (size_t)t.nbytes, after);
    CHECK(strcmp(before, after) == 0);
    sha256_hex(copy->dl_tensor.data, (size_t)t.nbytes, after);
    CHECK(strcmp(before, after) == 0);
    /* The copy is the consumer's to write. */
    memset(copy->dl_tensor.data, 0, (size_t)t.nbytes);
  }
  shared->deleter(shared);
  copy->deleter(copy);
}

/* MMCKPT_OPEN_COPY_ON_WRITE: a consumer may write into mapped data; the write is private (the
 * file and a second open see the old bytes). */
static void copy_on_write_mapping(void) {
  mmckpt_checkpoint *cow = open_fixture("fixtures/proto4.pt", MMCKPT_OPEN_COPY_ON_WRITE);
  mmckpt_checkpoint *plain = open_fixture("fixtures/proto4.pt", 0);
  mmckpt_checkpoint *bad = NULL;
  mmckpt_open_options opts = MMCKPT_OPEN_OPTIONS_INIT;
  DLManagedTensorVersioned *dl = NULL;
  mmckpt_tensor t, u;
  char before[65], after[65];
  CHECK_OK(mmckpt_checkpoint_tensor_at(plain, 0, &u));
  sha256_hex(u.data, (size_t)u.nbytes, before);
  CHECK_OK(mmckpt_checkpoint_tensor_at(cow, 0, &t));
  CHECK(t.flags & MMCKPT_TENSOR_MAPPED);
  CHECK_OK(mmckpt_checkpoint_tensor_to_dlpack(cow, 0, &dl));
  mmckpt_checkpoint_close(cow);
  if (dl) {
    char *bytes = (char *)dl->dl_tensor.data + dl->dl_tensor.byte_offset;
    memset(bytes, 0x5a, (size_t)t.nbytes);
    CHECK(bytes[0] == 0x5a);
    dl->deleter(dl);
  }
  sha256_hex(u.data, (size_t)u.nbytes, after);
  CHECK(strcmp(before, after) == 0);
  mmckpt_checkpoint_close(plain);
  opts.flags = MMCKPT_OPEN_COPY_ON_WRITE | MMCKPT_OPEN_READ;
  CHECK_STATUS(mmckpt_checkpoint_open(data_path("fixtures/proto4.pt"), &opts, &bad),
               MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("MMCKPT_OPEN_COPY_ON_WRITE");
  CHECK(bad == NULL);
}

/* The batched description equals one call per entry, and the dims buffer is checked. */
static void describe_in_one_call(void) {
  mmckpt_checkpoint *ckpt = open_fixture("fixtures/dtypes.pt", 0);
  size_t n = mmckpt_checkpoint_tensor_count(ckpt), i, needed = 0, at = 0;
  mmckpt_tensor *rows = (mmckpt_tensor *)calloc(n, sizeof *rows);
  mmckpt_status *status = (mmckpt_status *)calloc(n, sizeof *status);
  uint64_t *lengths = (uint64_t *)calloc(n, sizeof *lengths);
  int64_t *dims;
  CHECK_OK(mmckpt_checkpoint_describe(ckpt, 0, n, rows, status, NULL, NULL, 0, &needed));
  CHECK(needed == 4 * n); /* every tensor is [3, 5] */
  dims = (int64_t *)calloc(needed, sizeof *dims);
  CHECK_STATUS(mmckpt_checkpoint_describe(ckpt, 0, n, rows, status, NULL, dims, needed - 1, NULL),
               MMCKPT_ERR_BUFFER_TOO_SMALL);
  CHECK_OK(mmckpt_checkpoint_describe(ckpt, 0, n, rows, status, lengths, dims, needed, &needed));
  for (i = 0; i < n; i++) {
    mmckpt_tensor t;
    uint32_t d;
    CHECK_STATUS(mmckpt_checkpoint_tensor_at(ckpt, i, &t), status[i]);
    if (status[i] != MMCKPT_OK) continue;
    CHECK(rows[i].data == t.data && rows[i].dtype == t.dtype && rows[i].ndim == t.ndim);
    CHECK(strcmp(rows[i].name, t.name) == 0);
    CHECK(lengths[i] == 15 * mmckpt_dtype_itemsize(t.dtype)); /* one [3, 5] tensor each */
    for (d = 0; d < t.ndim; d++) CHECK(dims[at + d] == t.shape[d]);
    for (d = 0; d < t.ndim; d++) CHECK(dims[at + t.ndim + d] == t.strides[d]);
    at += 2 * t.ndim;
  }
  CHECK(at == needed);
  CHECK_STATUS(mmckpt_checkpoint_describe(ckpt, n, 1, rows, status, NULL, NULL, 0, NULL),
               MMCKPT_ERR_NOT_FOUND);
  CHECK_STATUS(mmckpt_checkpoint_describe(ckpt, 1, (size_t)-1, rows, status, NULL, NULL, 0, NULL),
               MMCKPT_ERR_NOT_FOUND);
  free(dims);
  free(lengths);
  free(status);
  free(rows);
  mmckpt_checkpoint_close(ckpt);
}

/* The pre-1.0 wrapper: the same DLTensor, owning the versioned export; its deleter frees
   both (ASan and valgrind see a leak or a double free otherwise), also after the close. */
static void unversioned_wrapper(void) {
  mmckpt_checkpoint *ckpt = open_fixture("fixtures/forms.pt", 0);
  size_t index = index_of(ckpt, "transpose");
  DLManagedTensorVersioned *v = NULL, fake;
  DLManagedTensor *legacy = NULL;
  mmckpt_tensor t;
  char before[65], after[65];
  CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, index, &t));
  CHECK_OK(mmckpt_checkpoint_tensor_to_dlpack(ckpt, index, &v));
  if (!v) return;
  CHECK_OK(mmckpt_dlpack_unversioned(v, &legacy));
  if (!legacy) return;
  CHECK(legacy->manager_ctx == v && legacy->deleter != NULL);
  CHECK(memcmp(&legacy->dl_tensor, &v->dl_tensor, sizeof legacy->dl_tensor) == 0);
  sha256_hex(t.data, (size_t)t.nbytes, before);
  mmckpt_checkpoint_close(ckpt);
  sha256_hex((const char *)legacy->dl_tensor.data + legacy->dl_tensor.byte_offset,
             (size_t)t.nbytes, after);
  CHECK(strcmp(before, after) == 0);
  legacy->deleter(legacy);
  /* Nothing to free it with: refused, and nothing written. */
  memset(&fake, 0, sizeof fake);
  legacy = NULL;
  CHECK_STATUS(mmckpt_dlpack_unversioned(&fake, &legacy), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK(legacy == NULL);
  CHECK_STATUS(mmckpt_dlpack_unversioned(NULL, &legacy), MMCKPT_ERR_NULL_ARGUMENT);
}

/* Layouts in one call: each entry's id names a distinct (shape, strides) written once as
   ndim, shape, strides; ids are numbered by first appearance, and two entries share an id
   exactly when their layouts are equal. A short dims buffer is refused. */
static void layouts_in_one_call(void) {
  mmckpt_checkpoint *ckpt = open_fixture("fixtures/nested.pt", 0);
  size_t n = mmckpt_checkpoint_tensor_count(ckpt), i, j, needed = 0, distinct = 0, at;
  uint32_t *ids = (uint32_t *)calloc(n, sizeof *ids);
  size_t *starts;
  int64_t *dims;
  uint32_t next = 0;
  CHECK_OK(mmckpt_checkpoint_describe_layouts(ckpt, 0, n, ids, NULL, 0, &needed, &distinct));
  CHECK(n > 2 && distinct >= 2 && distinct < n && needed > distinct);
  dims = (int64_t *)calloc(needed, sizeof *dims);
  CHECK_STATUS(mmckpt_checkpoint_describe_layouts(ckpt, 0, n, ids, dims, needed - 1, NULL, NULL),
               MMCKPT_ERR_BUFFER_TOO_SMALL);
  CHECK_OK(mmckpt_checkpoint_describe_layouts(ckpt, 0, n, ids, dims, needed, NULL, NULL));
  starts = (size_t *)calloc(distinct, sizeof *starts);
  for (i = 0, at = 0; i < distinct; i++) {
    starts[i] = at;
    at += 1 + 2 * (size_t)dims[at];
  }
  CHECK(at == needed);
  for (i = 0; i < n; i++) {
    mmckpt_tensor t;
    const int64_t *layout;
    uint32_t d;
    CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, i, &t));
    CHECK(ids[i] < distinct && ids[i] <= next);
    if (ids[i] == next) next++;
    layout = dims + starts[ids[i]];
    CHECK(layout[0] == (int64_t)t.ndim);
    for (d = 0; d < t.ndim; d++) CHECK(layout[1 + d] == t.shape[d]);
    for (d = 0; d < t.ndim; d++) CHECK(layout[1 + t.ndim + d] == t.strides[d]);
    for (j = 0; j < i; j++) {
      mmckpt_tensor u;
      int same;
      CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, j, &u));
      /* 0-d tensors have NULL shape and strides: memcmp must not see them. */
      same = u.ndim == t.ndim &&
             (t.ndim == 0 || (memcmp(u.shape, t.shape, t.ndim * sizeof *t.shape) == 0 &&
                              memcmp(u.strides, t.strides, t.ndim * sizeof *t.strides) == 0));
      CHECK(same == (ids[i] == ids[j]));
    }
  }
  CHECK(next == distinct);
  /* A sub-range numbers its own layouts from 0. */
  CHECK_OK(mmckpt_checkpoint_describe_layouts(ckpt, n - 1, 1, ids, dims, needed, &needed, &distinct));
  CHECK(ids[0] == 0 && distinct == 1);
  CHECK_STATUS(mmckpt_checkpoint_describe_layouts(ckpt, n, 1, ids, NULL, 0, NULL, NULL),
               MMCKPT_ERR_NOT_FOUND);
  free(starts);
  free(dims);
  free(ids);
  mmckpt_checkpoint_close(ckpt);
}

/* All names in one buffer, NUL after each, in table order; the size is asked first, a short
   buffer is refused having written nothing, and a range past the table is NOT_FOUND. */
static void names_in_one_call(void) {
  mmckpt_checkpoint *ckpt = open_fixture("fixtures/nested.pt", 0);
  size_t n = mmckpt_checkpoint_tensor_count(ckpt), i, needed = 0, partial = 0;
  const char *at;
  char *buf;
  CHECK_OK(mmckpt_checkpoint_describe_names(ckpt, 0, n, NULL, 0, &needed));
  CHECK(n > 1 && needed > n);
  buf = (char *)malloc(needed);
  memset(buf, 'x', needed);
  CHECK_STATUS(mmckpt_checkpoint_describe_names(ckpt, 0, n, buf, needed - 1, NULL),
               MMCKPT_ERR_BUFFER_TOO_SMALL);
  CHECK(buf[0] == 'x');
  CHECK_OK(mmckpt_checkpoint_describe_names(ckpt, 0, n, buf, needed, NULL));
  for (i = 0, at = buf; i < n; i++) {
    CHECK(strcmp(at, mmckpt_checkpoint_name_at(ckpt, i)) == 0);
    at += strlen(at) + 1;
  }
  CHECK((size_t)(at - buf) == needed);
  /* A sub-range starts at its first entry's name. */
  CHECK_OK(mmckpt_checkpoint_describe_names(ckpt, 1, 1, buf, needed, &partial));
  CHECK(strcmp(buf, mmckpt_checkpoint_name_at(ckpt, 1)) == 0 && partial == strlen(buf) + 1);
  CHECK_STATUS(mmckpt_checkpoint_describe_names(ckpt, n, 1, NULL, 0, NULL), MMCKPT_ERR_NOT_FOUND);
  free(buf);
  mmckpt_checkpoint_close(ckpt);
}

int main(int argc, char **argv) {
  test_init(argc, argv);
  names_in_one_call();
  every_dtype_has_torchs_code();
  layouts_and_lifetime();
  copied_storage_outlives_close();
  module_entries();
  copy_on_write_mapping();
  describe_in_one_call();
  layouts_in_one_call();
  unversioned_wrapper();
  return test_finish("test_dlpack");
}
