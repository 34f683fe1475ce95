/* Meta modules and load through the C ABI: the recipe end to end (spec → assign-load →
   zero-copy views equal to the manifest), lifetimes after close, copy load, conversion,
   strictness (all-or-nothing), prefix, callbacks in file order, bind checks. */
#include "support.h"

#include <stdint.h>

static char *read_text(const char *relative, size_t *len) {
  unsigned char *bytes = read_file(data_path(relative), len);
  if (!bytes) {
    fprintf(stderr, "cannot read %s\n", data_path(relative));
    exit(2);
  }
  bytes[*len] = 0;
  return (char *)bytes;
}

static mmckpt_module *recipe_module(void) {
  size_t len = 0;
  char *spec = read_text("fixtures/recipe.spec.json", &len);
  mmckpt_module *m = NULL;
  CHECK_OK(mmckpt_module_from_spec(spec, len, &m));
  free(spec);
  return m;
}

static const manifest_row *manifest_find(const manifest_row *rows, size_t count, const char *file,
                                         const char *name) {
  size_t i;
  for (i = 0; i < count; i++)
    if (strcmp(rows[i].file, file) == 0 && strcmp(rows[i].name, name) == 0) return &rows[i];
  return NULL;
}

static void check_values(const manifest_row *rows, size_t count, const char *file, const mmckpt_tensor *t) {
  const manifest_row *r = manifest_find(rows, count, file, t->name);
  unsigned char *elems;
  char hex[65];
  CHECK(r != NULL);
  if (!r || !t->data) return;
  elems = gather_row_major(t);
  sha256_hex(elems, (size_t)t->numel * mmckpt_dtype_itemsize(t->dtype), hex);
  if (strcmp(hex, r->sha256) != 0) {
    fprintf(stderr, "%s: %s: loaded values differ from what torch wrote\n", file, t->name);
    test_failures++;
  }
  free(elems);
}

/* The recipe: SomeModule(1000) from its spec, assign-loaded from the torch-written file. */
static void test_recipe_assign(const manifest_row *rows, size_t count) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = recipe_module();
  mmckpt_load_options opts;
  mmckpt_load_report *report = NULL;
  size_t i, n, file_len = 0;
  unsigned char *file = read_file(data_path("fixtures/recipe.pt"), &file_len);

  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/recipe.pt"), NULL, &ckpt));
  if (!m || !ckpt) return;
  n = mmckpt_module_count(m);
  CHECK(n == 20);
  for (i = 0; i < n; i++) { /* a meta module has no data */
    mmckpt_tensor e;
    CHECK_OK(mmckpt_module_at(m, i, &e));
    CHECK(e.data == NULL && e.storage_id == 0);
    CHECK(e.dtype == MMCKPT_DTYPE_FLOAT32);
  }
  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  CHECK(opts.flags & MMCKPT_LOAD_STRICT);
  opts.flags |= MMCKPT_LOAD_ASSIGN;
  CHECK_OK(mmckpt_module_load(m, ckpt, &opts, &report));
  CHECK(report != NULL);
  if (report) {
    CHECK(strcmp(mmckpt_load_report_message(report), "<All keys matched successfully>") == 0);
    CHECK(mmckpt_load_report_missing_count(report) == 0);
    CHECK(mmckpt_load_report_unexpected_count(report) == 0);
    mmckpt_load_report_free(report);
  }
  for (i = 0; i < n; i++) {
    mmckpt_tensor e, c;
    CHECK_OK(mmckpt_module_at(m, i, &e));
    CHECK_OK(mmckpt_checkpoint_tensor(ckpt, e.name, &c));
    CHECK(e.data == c.data); /* zero-copy: the very same pointer */
    CHECK(e.storage_id == c.storage_id);
    CHECK(e.flags & MMCKPT_TENSOR_MAPPED);
    CHECK(e.flags & MMCKPT_TENSOR_PARAMETER);
    CHECK(e.file_offset == c.file_offset && e.file_offset + e.nbytes <= file_len);
    if (file && e.file_offset + e.nbytes <= file_len)
      CHECK(memcmp(file + e.file_offset, e.data, (size_t)e.nbytes) == 0);
  }
  /* The module keeps the mapping alive: close the checkpoint, then read every view. */
  mmckpt_checkpoint_close(ckpt);
  for (i = 0; i < n; i++) {
    mmckpt_tensor e;
    CHECK_OK(mmckpt_module_at(m, i, &e));
    check_values(rows, count, "recipe.pt", &e);
  }
  mmckpt_module_free(m);
  free(file);
}

static uint16_t float_to_bf16_rne(float f) {
  uint32_t bits;
  memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); /* quiet NaN */
  return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* Copy load into materialized storage, and conversion to bfloat16 during load. */
static void test_copy_and_convert(const manifest_row *rows, size_t count) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = recipe_module(), *bf = NULL;
  mmckpt_tensor e, c;
  size_t i, k, n;
  static const char bf16_spec[] =
      "{\"name\": \"SomeModule\", \"type\": \"Module\", \"dtype\": \"bfloat16\", \"children\": {"
      "\"linears\": {\"type\": \"ModuleList\", \"repeat\": 10, \"item\": {\"type\": \"Linear\", "
      "\"in_features\": 1000, \"out_features\": 1000}}}}";

  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/recipe.pt"), NULL, &ckpt));
  if (!m || !ckpt) return;
  /* Copy load before storage exists: a state error, and nothing changes. */
  CHECK_STATUS(mmckpt_module_load(m, ckpt, NULL, NULL), MMCKPT_ERR_STATE);
  CHECK_OK(mmckpt_module_at(m, 0, &e));
  CHECK(e.data == NULL);
  CHECK_OK(mmckpt_module_materialize(m));
  n = mmckpt_module_count(m);
  for (i = 0; i < n; i++) {
    CHECK_OK(mmckpt_module_at(m, i, &e));
    CHECK(e.data != NULL && ((uintptr_t)e.data % 64) == 0);
    CHECK(!(e.flags & MMCKPT_TENSOR_MAPPED));
    CHECK(((const unsigned char *)e.data)[0] == 0);
  }
  CHECK_OK(mmckpt_module_load(m, ckpt, NULL, NULL)); /* NULL options: strict copy load */
  for (i = 0; i < n; i++) {
    CHECK_OK(mmckpt_module_at(m, i, &e));
    CHECK_OK(mmckpt_checkpoint_tensor(ckpt, e.name, &c));
    CHECK(e.data != c.data && e.storage_id != c.storage_id);
    check_values(rows, count, "recipe.pt", &e);
  }
  mmckpt_module_free(m);

  CHECK_OK(mmckpt_module_from_spec(bf16_spec, sizeof bf16_spec - 1, &bf));
  if (bf) {
    CHECK_OK(mmckpt_module_materialize(bf));
    CHECK_OK(mmckpt_module_load(bf, ckpt, NULL, NULL));
    for (i = 0; i < mmckpt_module_count(bf); i++) {
      const float *src;
      const uint16_t *dst;
      CHECK_OK(mmckpt_module_at(bf, i, &e));
      CHECK_OK(mmckpt_checkpoint_tensor(ckpt, e.name, &c));
      CHECK(e.dtype == MMCKPT_DTYPE_BFLOAT16 && e.nbytes == c.numel * 2);
      src = (const float *)c.data;
      dst = (const uint16_t *)e.data;
      for (k = 0; k < c.numel; k++) {
        if (dst[k] != float_to_bf16_rne(src[k])) {
          fprintf(stderr, "%s[%zu]: bf16 0x%04x, expected 0x%04x\n", e.name, k, dst[k], float_to_bf16_rne(src[k]));
          test_failures++;
          break;
        }
      }
    }
    mmckpt_module_free(bf);
  }
  mmckpt_checkpoint_close(ckpt);
}

/* Strict failures change nothing; non-strict loads report; prefix selects and strips. */
static void test_strictness(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = NULL;
  mmckpt_load_options opts;
  mmckpt_load_report *report = (mmckpt_load_report *)(void *)0x1;
  mmckpt_tensor e;
  int64_t w_shape[2] = {16, 8}, bad_shape[2] = {5, 3}, b_shape[1] = {16};

  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/nested.pt"), NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "model.fc.weight", &e));
  w_shape[0] = e.shape[0];
  w_shape[1] = e.shape[1];
  b_shape[0] = e.shape[0];

  CHECK_OK(mmckpt_module_new("Net", &m));
  if (!m) return;
  CHECK_OK(mmckpt_module_add(m, "fc.weight", MMCKPT_DTYPE_FLOAT32, w_shape, 2, 0));
  CHECK_OK(mmckpt_module_add(m, "fc.bias", MMCKPT_DTYPE_FLOAT32, b_shape, 1, 0));
  CHECK_OK(mmckpt_module_add(m, "extra", MMCKPT_DTYPE_FLOAT32, b_shape, 1, MMCKPT_ENTRY_BUFFER));
  CHECK_OK(mmckpt_module_add(m, "scratch", MMCKPT_DTYPE_FLOAT32, b_shape, 1, MMCKPT_ENTRY_NON_PERSISTENT));
  CHECK_STATUS(mmckpt_module_add(m, "fc.bias", MMCKPT_DTYPE_FLOAT32, b_shape, 1, 0), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("fc.bias");
  CHECK_OK(mmckpt_module_add(m, "neg", MMCKPT_DTYPE_FLOAT32, bad_shape, 1, 0));
  {
    int64_t negative[1] = {-1};
    CHECK_STATUS(mmckpt_module_add(m, "negative", MMCKPT_DTYPE_FLOAT32, negative, 1, 0), MMCKPT_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("negative");
    CHECK_STATUS(mmckpt_module_add(m, "weird", (mmckpt_dtype)999, b_shape, 1, 0), MMCKPT_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mmckpt_module_add(m, "flags", MMCKPT_DTYPE_FLOAT32, b_shape, 1, 1u << 20), MMCKPT_ERR_INVALID_ARGUMENT);
    CHECK(mmckpt_module_count(m) == 5);
  }

  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  opts.flags |= MMCKPT_LOAD_ASSIGN;
  opts.prefix = "model.";
  /* strict: "neg" and "extra" are missing (torch's order: the root's parameters, its buffers,
     then children), norm.* unexpected */
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, &report), MMCKPT_ERR_KEY_MISMATCH);
  CHECK_ERROR_MENTIONS("Error(s) in loading state_dict for Net:");
  CHECK_ERROR_MENTIONS("Missing key(s) in state_dict: \"neg\", \"extra\". ");
  CHECK_ERROR_MENTIONS("Unexpected key(s) in state_dict: \"norm.weight\", \"norm.bias\". ");
  CHECK(report == (mmckpt_load_report *)(void *)0x1);
  CHECK_OK(mmckpt_module_get(m, "fc.weight", &e));
  CHECK(e.data == NULL); /* unchanged */

  opts.flags &= ~(uint32_t)MMCKPT_LOAD_STRICT;
  report = NULL;
  CHECK_OK(mmckpt_module_load(m, ckpt, &opts, &report));
  if (report) {
    CHECK(mmckpt_load_report_missing_count(report) == 2);
    CHECK(strcmp(mmckpt_load_report_missing(report, 0), "neg") == 0);
    CHECK(mmckpt_load_report_unexpected_count(report) == 2);
    CHECK(strcmp(mmckpt_load_report_unexpected(report, 1), "norm.bias") == 0);
    CHECK(mmckpt_load_report_missing(report, 99) == NULL);
    CHECK(strcmp(mmckpt_load_report_message(report),
                 "_IncompatibleKeys(missing_keys=['neg', 'extra'], unexpected_keys=['norm.weight', 'norm.bias'])") == 0);
    mmckpt_load_report_free(report);
  }
  CHECK_OK(mmckpt_module_get(m, "fc.weight", &e));
  CHECK(e.data != NULL && (e.flags & MMCKPT_TENSOR_MAPPED));
  CHECK_OK(mmckpt_module_get(m, "extra", &e));
  CHECK(e.data == NULL && (e.flags & MMCKPT_TENSOR_BUFFER));
  mmckpt_module_free(m);

  /* A size mismatch: torch's wording, nothing changed. */
  m = NULL;
  CHECK_OK(mmckpt_module_new("Net", &m));
  CHECK_OK(mmckpt_module_add(m, "fc.weight", MMCKPT_DTYPE_FLOAT32, bad_shape, 2, 0));
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, NULL), MMCKPT_ERR_SHAPE_MISMATCH);
  CHECK_ERROR_MENTIONS("size mismatch for fc.weight: copying a param with shape torch.Size([");
  CHECK_ERROR_MENTIONS("the shape in current model is torch.Size([5, 3]).");
  CHECK_OK(mmckpt_module_get(m, "fc.weight", &e));
  CHECK(e.data == NULL);
  mmckpt_module_free(m);
  mmckpt_checkpoint_close(ckpt);
}

typedef struct callback_log {
  int calls;
  int stop_at;
  uint64_t last_offset;
  int out_of_order;
} callback_log;

static int32_t on_tensor(void *user_data, const mmckpt_tensor *entry) {
  callback_log *log = (callback_log *)user_data;
  log->calls++;
  if (entry->data == NULL) log->out_of_order++;
  if (entry->file_offset != MMCKPT_NO_OFFSET) {
    if (entry->file_offset < log->last_offset) log->out_of_order++;
    log->last_offset = entry->file_offset;
  }
  return log->stop_at && log->calls >= log->stop_at;
}

static void test_callback_and_bind(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = recipe_module();
  mmckpt_load_options opts;
  callback_log log;
  mmckpt_tensor e;
  size_t i;
  static float small[10];
  float *big;

  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/recipe.pt"), NULL, &ckpt));
  if (!m || !ckpt) return;
  memset(&log, 0, sizeof log);
  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  opts.flags |= MMCKPT_LOAD_ASSIGN;
  opts.on_tensor = on_tensor;
  opts.user_data = &log;
  log.stop_at = 3;
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, NULL), MMCKPT_ERR_CALLBACK);
  CHECK(log.calls == 3);
  for (i = 0; i < mmckpt_module_count(m); i++) { /* a strict load that stopped changed nothing */
    CHECK_OK(mmckpt_module_at(m, i, &e));
    CHECK(e.data == NULL);
  }
  memset(&log, 0, sizeof log);
  CHECK_OK(mmckpt_module_load(m, ckpt, &opts, NULL));
  CHECK(log.calls == 20 && log.out_of_order == 0);

  /* bind: size checked, NULL refused; then a copy load writes into the caller's memory */
  CHECK_STATUS(mmckpt_module_bind(m, "linears.0.bias", small, sizeof small), MMCKPT_ERR_BUFFER_TOO_SMALL);
  CHECK_ERROR_MENTIONS("linears.0.bias");
  CHECK_STATUS(mmckpt_module_bind(m, "linears.0.bias", NULL, 4000), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_module_bind(m, "no.such", small, sizeof small), MMCKPT_ERR_NOT_FOUND);
  mmckpt_module_free(m);
  m = recipe_module();
  big = (float *)calloc(1000, sizeof(float));
  CHECK_OK(mmckpt_module_bind(m, "linears.0.bias", big, 1000 * sizeof(float)));
  CHECK_OK(mmckpt_module_get(m, "linears.0.bias", &e));
  CHECK(e.data == big);
  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  opts.flags &= ~(uint32_t)MMCKPT_LOAD_STRICT; /* only the bound entry has storage */
  CHECK_STATUS(mmckpt_module_load(m, ckpt, &opts, NULL), MMCKPT_ERR_STATE);
  CHECK_ERROR_MENTIONS("linears.0.weight");
  CHECK_OK(mmckpt_module_materialize(m)); /* gives storage to the others, keeps the binding */
  CHECK_OK(mmckpt_module_get(m, "linears.0.bias", &e));
  CHECK(e.data == big);
  CHECK_OK(mmckpt_module_load(m, ckpt, &opts, NULL));
  CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "linears.0.bias", &e));
  CHECK(memcmp(big, e.data, 1000 * sizeof(float)) == 0);
  mmckpt_module_free(m);
  free(big);
  mmckpt_checkpoint_close(ckpt);
}

/* Tied weights stay tied through an assign load into a skeleton made from the checkpoint. */
static void test_tied_and_skeleton(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = NULL;
  mmckpt_load_options opts;
  mmckpt_tensor a, b;
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/forms.pt"), NULL, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_module_from_checkpoint(ckpt, &m));
  if (!m) return;
  CHECK(mmckpt_module_count(m) == mmckpt_checkpoint_tensor_count(ckpt));
  CHECK_OK(mmckpt_module_get(m, "embed.weight", &a));
  CHECK(a.data == NULL);
  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  opts.flags |= MMCKPT_LOAD_ASSIGN;
  CHECK_OK(mmckpt_module_load(m, ckpt, &opts, NULL));
  mmckpt_checkpoint_close(ckpt);
  CHECK_OK(mmckpt_module_get(m, "embed.weight", &a));
  CHECK_OK(mmckpt_module_get(m, "lm_head.weight", &b));
  CHECK(a.data == b.data && a.storage_id == b.storage_id && a.storage_id != 0);
  CHECK_OK(mmckpt_module_get(m, "transpose", &a));
  CHECK(!(a.flags & MMCKPT_TENSOR_CONTIGUOUS)); /* the checkpoint's strides win */
  mmckpt_module_free(m);
}

static void test_bad_specs(void) {
  static const struct { const char *json; const char *needle; } cases[] = {
      {"not json", "JSON"},
      {"{\"type\": \"Linearr\", \"in_features\": 1, \"out_features\": 2}", "Linearr"},
      {"{\"type\": \"Module\", \"children\": {\"fc\": {\"type\": \"Linear\", \"in_features\": 3}}}", "node 'fc'"},
      {"{\"type\": \"Module\", \"children\": {\"fc\": {\"type\": \"Linear\", \"in_features\": \"3\", \"out_features\": 2}}}", "node 'fc'"},
      {"{\"type\": \"Module\", \"params\": {\"w\": {\"shape\": [-1, 2]}}}", "w"},
      {"{\"name\": \"N\", \"entries\": [{\"name\": \"a\", \"shape\": [1]}, {\"name\": \"a\", \"shape\": [1]}]}", "a"},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mmckpt_module *m = (mmckpt_module *)(void *)0x1;
    CHECK_STATUS(mmckpt_module_from_spec(cases[i].json, strlen(cases[i].json), &m), MMCKPT_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS(cases[i].needle);
    CHECK(m == (mmckpt_module *)(void *)0x1);
  }
  CHECK_STATUS(mmckpt_module_from_spec(NULL, 0, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  mmckpt_module_free(NULL);
  mmckpt_load_report_free(NULL);
  CHECK(mmckpt_module_count(NULL) == 0);
}

int main(int argc, char **argv) {
  size_t count = 0;
  manifest_row *rows;
  test_init(argc, argv);
  rows = load_manifest(&count);
  test_recipe_assign(rows, count);
  test_copy_and_convert(rows, count);
  test_strictness();
  test_callback_and_bind();
  test_tied_and_skeleton();
  test_bad_specs();
  free(rows);
  return test_finish("test_module");
}
