/* Calls from inside an on_tensor callback (issue 11 B.12), in every load mode (copy, assign,
   assign + convert): each call that would change, load or read the module being loaded is
   refused with MMCKPT_ERR_STATE naming the call, and the load goes on; freeing the module stops
   the load and frees it when mmckpt_module_load returns; closing the checkpoint being loaded is
   carried out when the load returns; read-only calls work. Run plain, under ASan/UBSan and under
   valgrind, so a use after free or a leak fails. */
#include "support.h"

enum action { ADD, MATERIALIZE, BIND, LOAD_SAME, AT, GET, FREE_MODULE, CLOSE_CHECKPOINT, READS };
static const char *const action_call[] = {
    "mmckpt_module_add", "mmckpt_module_materialize", "mmckpt_module_bind", "mmckpt_module_load",
    "mmckpt_module_at",  "mmckpt_module_get",         "mmckpt_module_free", "mmckpt_checkpoint_close",
    "read-only calls"};

enum mode { COPY, ASSIGN, ASSIGN_CONVERT };
static const char *const mode_name[] = {"copy", "assign", "assign+convert"};

typedef struct {
  enum action action;
  mmckpt_module *m;
  mmckpt_checkpoint *ckpt;
  int calls;
  mmckpt_status status; /* what the call made from the first callback returned */
  char error[1024];     /* and the last error after it */
} context;

static float bias_memory[1000];
static mmckpt_tensor reference_weight; /* linears.0.weight of a checkpoint opened separately */

static void reads(context *c, const mmckpt_tensor *entry) {
  mmckpt_tensor t;
  mmckpt_value_kind kind;
  mmckpt_module *other = NULL;
  mmckpt_load_options opts;
  size_t n = mmckpt_checkpoint_tensor_count(c->ckpt);
  CHECK(n == 20);
  CHECK_OK(mmckpt_checkpoint_tensor(c->ckpt, "linears.0.weight", &t));
  CHECK(t.numel == 1000000);
  CHECK_OK(mmckpt_checkpoint_tensor_at(c->ckpt, n - 1, &t));
  CHECK(mmckpt_checkpoint_name_at(c->ckpt, 0) != NULL);
  CHECK(mmckpt_checkpoint_format(c->ckpt) != NULL && strcmp(mmckpt_checkpoint_format(c->ckpt), "zip") == 0);
  CHECK_OK(mmckpt_checkpoint_value_kind(c->ckpt, "linears.0.bias", &kind));
  CHECK(kind == MMCKPT_VALUE_TENSOR);
  CHECK(mmckpt_module_count(c->m) == 2);
  CHECK(mmckpt_dtype_name(entry->dtype) != NULL);
  CHECK(mmckpt_dtype_itemsize(entry->dtype) == 2 || mmckpt_dtype_itemsize(entry->dtype) == 4);
  CHECK(strstr(mmckpt_status_str(MMCKPT_ERR_STATE), "MMCKPT_ERR_STATE") != NULL);
  CHECK(mmckpt_version() != NULL && mmckpt_version_number() == MMCKPT_VERSION_NUMBER);
  /* A new module from the checkpoint being loaded, itself loaded (assign) and freed. */
  CHECK_OK(mmckpt_module_from_checkpoint(c->ckpt, &other));
  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  opts.flags |= MMCKPT_LOAD_ASSIGN;
  CHECK_OK(mmckpt_module_load(other, c->ckpt, &opts, NULL));
  CHECK_OK(mmckpt_module_get(other, "linears.9.bias", &t));
  CHECK(t.data != NULL);
  mmckpt_module_free(other);
  /* A failed call from the callback sets the last error as anywhere else. */
  CHECK_STATUS(mmckpt_checkpoint_tensor(c->ckpt, "no.such", &t), MMCKPT_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("no.such");
}

static int32_t on_tensor(void *user_data, const mmckpt_tensor *entry) {
  context *c = (context *)user_data;
  mmckpt_tensor t;
  int64_t shape[1] = {3};
  c->calls++;
  CHECK(entry != NULL && entry->data != NULL);
  if (c->calls > 1) return 0;
  switch (c->action) {
  case ADD: c->status = mmckpt_module_add(c->m, "extra", MMCKPT_DTYPE_FLOAT32, shape, 1, 0); break;
  case MATERIALIZE: c->status = mmckpt_module_materialize(c->m); break;
  case BIND: c->status = mmckpt_module_bind(c->m, "bias", bias_memory, sizeof bias_memory); break;
  case LOAD_SAME: c->status = mmckpt_module_load(c->m, c->ckpt, NULL, NULL); break;
  case AT: c->status = mmckpt_module_at(c->m, 0, &t); break;
  case GET: c->status = mmckpt_module_get(c->m, "bias", &t); break;
  case FREE_MODULE: mmckpt_module_free(c->m); break;
  case CLOSE_CHECKPOINT: mmckpt_checkpoint_close(c->ckpt); break;
  case READS: reads(c, entry); break;
  }
  snprintf(c->error, sizeof c->error, "%s", mmckpt_last_error());
  return 0;
}

static mmckpt_module *linear(enum mode mode) {
  const char *spec = mode == ASSIGN_CONVERT
      ? "{\"name\":\"Lin\",\"type\":\"Linear\",\"in_features\":1000,\"out_features\":1000,\"dtype\":\"float16\"}"
      : "{\"name\":\"Lin\",\"type\":\"Linear\",\"in_features\":1000,\"out_features\":1000}";
  mmckpt_module *m = NULL;
  CHECK_OK(mmckpt_module_from_spec(spec, strlen(spec), &m));
  if (m && mode == COPY) CHECK_OK(mmckpt_module_materialize(m));
  return m;
}

static void run(enum mode mode, enum action action) {
  context c;
  mmckpt_load_options opts;
  mmckpt_load_report *report = NULL;
  mmckpt_status status;
  mmckpt_tensor t;
  memset(&c, 0, sizeof c);
  c.action = action;
  c.status = MMCKPT_OK;
  c.m = linear(mode);
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/recipe.pt"), NULL, &c.ckpt));
  if (!c.m || !c.ckpt) return;
  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  if (mode != COPY) opts.flags |= MMCKPT_LOAD_ASSIGN;
  if (mode == ASSIGN_CONVERT) opts.flags |= MMCKPT_LOAD_CONVERT;
  opts.prefix = "linears.0";
  opts.on_tensor = on_tensor;
  opts.user_data = &c;
  status = mmckpt_module_load(c.m, c.ckpt, &opts, &report);

  if (action == FREE_MODULE) {
    /* The load stopped at the first entry and freed the module (c.m is gone). */
    if (status != MMCKPT_ERR_CALLBACK || c.calls != 1 || report != NULL) {
      fprintf(stderr, "%s load, free from the callback: status %u, %d calls\n", mode_name[mode],
              (unsigned)status, c.calls);
      test_failures++;
    }
    CHECK_ERROR_MENTIONS("mmckpt_module_free");
    mmckpt_checkpoint_close(c.ckpt);
    return;
  }
  if (status != MMCKPT_OK || c.calls != 2) {
    fprintf(stderr, "%s load, %s from the callback: status %u (%s), %d calls\n", mode_name[mode],
            action_call[action], (unsigned)status, mmckpt_last_error(), c.calls);
    test_failures++;
  }
  mmckpt_load_report_free(report);
  if (action <= GET) {
    if (c.status != MMCKPT_ERR_STATE || !strstr(c.error, action_call[action]) ||
        !strstr(c.error, "being loaded")) {
      fprintf(stderr, "%s load: %s from the callback returned %u, last error \"%s\"\n",
              mode_name[mode], action_call[action], (unsigned)c.status, c.error);
      test_failures++;
    }
    /* Refused calls changed nothing, and the module is usable again after the load. */
    CHECK(mmckpt_module_count(c.m) == 2);
    CHECK_STATUS(mmckpt_module_get(c.m, "extra", &t), MMCKPT_ERR_NOT_FOUND);
    CHECK_OK(mmckpt_module_get(c.m, "bias", &t));
    CHECK(t.data != NULL && t.data != (const void *)bias_memory);
    CHECK(t.dtype == (mode == ASSIGN_CONVERT ? MMCKPT_DTYPE_FLOAT16 : MMCKPT_DTYPE_FLOAT32));
    CHECK_OK(mmckpt_module_add(c.m, "extra", MMCKPT_DTYPE_FLOAT32, NULL, 0, 0));
  } else {
    CHECK(c.status == MMCKPT_OK);
  }
  /* The loaded values are readable and right (also after a deferred close: an assign load's
     views keep the mapping; under valgrind / ASan freed memory would show). */
  CHECK_OK(mmckpt_module_get(c.m, "weight", &t));
  CHECK(t.data != NULL);
  if (t.data && mode != ASSIGN_CONVERT)
    CHECK(memcmp(t.data, reference_weight.data, 4096) == 0);
  if (t.data && mode == ASSIGN_CONVERT) CHECK(t.nbytes == 2000000);
  if (action != CLOSE_CHECKPOINT) mmckpt_checkpoint_close(c.ckpt); /* else closed by the load */
  mmckpt_module_free(c.m);
}

int main(int argc, char **argv) {
  int mode, action;
  mmckpt_checkpoint *reference = NULL;
  test_init(argc, argv);
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/recipe.pt"), NULL, &reference));
  if (!reference) return test_finish("test_reentrancy");
  CHECK_OK(mmckpt_checkpoint_tensor(reference, "linears.0.weight", &reference_weight));
  for (mode = COPY; mode <= ASSIGN_CONVERT; mode++)
    for (action = ADD; action <= READS; action++) run((enum mode)mode, (enum action)action);
  mmckpt_checkpoint_close(reference);
  return test_finish("test_reentrancy");
}
