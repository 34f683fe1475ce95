/* Non-tensor values by dotted path (mmckpt_checkpoint_value_*), against tests/fixtures/nested.pt
   and the values torch recorded in its manifest: epoch 3, step 2**70, lr 0.001, name "run-1",
   blob b"\x00\x01", flags [True, None], args = argparse.Namespace(hidden=16, scale=tensor). */
#include "support.h"

static mmckpt_checkpoint *open_nested(const char *root) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_open_options opts;
  mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION);
  opts.root = root;
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/nested.pt"), &opts, &ckpt));
  return ckpt;
}

static mmckpt_value_kind kind_of(const mmckpt_checkpoint *ckpt, const char *path) {
  mmckpt_value_kind kind = (mmckpt_value_kind)999;
  CHECK_OK(mmckpt_checkpoint_value_kind(ckpt, path, &kind));
  return kind;
}

static void test_scalars(const mmckpt_checkpoint *ckpt) {
  int64_t i = 0;
  double f = 0, re = -1, im = -1;
  int32_t b = -1;
  char buf[64];
  size_t len = 0;

  CHECK(kind_of(ckpt, "") == MMCKPT_VALUE_DICT);
  CHECK(kind_of(ckpt, "epoch") == MMCKPT_VALUE_INT);
  CHECK_OK(mmckpt_checkpoint_value_int(ckpt, "epoch", &i));
  CHECK(i == 3);
  CHECK_OK(mmckpt_checkpoint_value_float(ckpt, "epoch", &f)); /* float(3) */
  CHECK(f == 3.0);

  CHECK(kind_of(ckpt, "step") == MMCKPT_VALUE_BIGINT);
  i = 42;
  CHECK_STATUS(mmckpt_checkpoint_value_int(ckpt, "step", &i), MMCKPT_ERR_LIMIT);
  CHECK_ERROR_MENTIONS("step");
  CHECK(i == 42); /* not written on failure */
  CHECK_OK(mmckpt_checkpoint_value_string(ckpt, "step", buf, sizeof buf, &len));
  CHECK(len == 22 && strcmp(buf, "1180591620717411303424") == 0);
  CHECK_OK(mmckpt_checkpoint_value_float(ckpt, "step", &f));
  CHECK(f == 1180591620717411303424.0);

  CHECK(kind_of(ckpt, "lr") == MMCKPT_VALUE_FLOAT);
  CHECK_OK(mmckpt_checkpoint_value_float(ckpt, "lr", &f));
  CHECK(f == 0.001);
  CHECK_OK(mmckpt_checkpoint_value_complex(ckpt, "lr", &re, &im));
  CHECK(re == 0.001 && im == 0.0);
  CHECK_OK(mmckpt_checkpoint_value_float(ckpt, "optimizer.param_groups.0.lr", &f));
  CHECK(f == 0.001);
  CHECK_OK(mmckpt_checkpoint_value_float(ckpt, "optimizer.param_groups.0.betas.1", &f));
  CHECK(f == 0.999);

  CHECK(kind_of(ckpt, "name") == MMCKPT_VALUE_STRING);
  CHECK_OK(mmckpt_checkpoint_value_string(ckpt, "name", buf, sizeof buf, &len));
  CHECK(len == 5 && strcmp(buf, "run-1") == 0);

  CHECK(kind_of(ckpt, "blob") == MMCKPT_VALUE_BYTES);
  memset(buf, 0x55, sizeof buf);
  CHECK_OK(mmckpt_checkpoint_value_string(ckpt, "blob", buf, sizeof buf, &len));
  CHECK(len == 2 && buf[0] == 0 && buf[1] == 1 && buf[2] == 0);

  CHECK(kind_of(ckpt, "flags") == MMCKPT_VALUE_LIST);
  CHECK(kind_of(ckpt, "flags.0") == MMCKPT_VALUE_BOOL);
  CHECK_OK(mmckpt_checkpoint_value_bool(ckpt, "flags.0", &b));
  CHECK(b == 1);
  CHECK_OK(mmckpt_checkpoint_value_int(ckpt, "flags.0", &i)); /* bool is an int */
  CHECK(i == 1);
  CHECK(kind_of(ckpt, "flags.1") == MMCKPT_VALUE_NONE);
  CHECK(kind_of(ckpt, "optimizer.param_groups.0.betas") == MMCKPT_VALUE_TUPLE);

  CHECK(kind_of(ckpt, "args") == MMCKPT_VALUE_OBJECT);
  CHECK_OK(mmckpt_checkpoint_value_class(ckpt, "args", buf, sizeof buf, &len));
  CHECK(strcmp(buf, "argparse.Namespace") == 0 && len == strlen("argparse.Namespace"));
  CHECK_OK(mmckpt_checkpoint_value_int(ckpt, "args.hidden", &i));
  CHECK(i == 16);
  CHECK(kind_of(ckpt, "args.scale") == MMCKPT_VALUE_TENSOR);
  {
    mmckpt_tensor t;
    CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "args.scale", &t));
  }
  /* state dict keys hold dots */
  CHECK(kind_of(ckpt, "model.fc.weight") == MMCKPT_VALUE_TENSOR);

  CHECK(strcmp(mmckpt_value_kind_name(MMCKPT_VALUE_BIGINT), "bigint") == 0);
  CHECK(strcmp(mmckpt_value_kind_name(MMCKPT_VALUE_STRING), "str") == 0);
  CHECK(mmckpt_value_kind_name(1000) == NULL);
}

static void test_children(const mmckpt_checkpoint *ckpt) {
  size_t n = 0, i, len = 0;
  char key[128], path[256];
  int found_epoch = 0;
  CHECK_OK(mmckpt_checkpoint_value_child_count(ckpt, "", &n));
  CHECK(n == 9);
  for (i = 0; i < n; i++) {
    mmckpt_value_kind kind;
    CHECK_OK(mmckpt_checkpoint_value_child_key(ckpt, "", i, key, sizeof key, &len));
    CHECK(strlen(key) == len);
    CHECK_OK(mmckpt_checkpoint_value_kind(ckpt, key, &kind));
    if (strcmp(key, "epoch") == 0) found_epoch = 1;
  }
  CHECK(found_epoch);
  CHECK_STATUS(mmckpt_checkpoint_value_child_key(ckpt, "", n, key, sizeof key, &len),
               MMCKPT_ERR_NOT_FOUND);

  CHECK_OK(mmckpt_checkpoint_value_child_count(ckpt, "args", &n));
  CHECK(n == 2);
  CHECK_OK(mmckpt_checkpoint_value_child_key(ckpt, "args", 0, key, sizeof key, &len));
  CHECK(strcmp(key, "hidden") == 0);
  CHECK_OK(mmckpt_checkpoint_value_child_count(ckpt, "optimizer.param_groups.0.params", &n));
  CHECK(n == 4);
  CHECK_OK(mmckpt_checkpoint_value_child_key(ckpt, "optimizer.param_groups.0.params", 3, key,
                                             sizeof key, &len));
  CHECK(strcmp(key, "3") == 0);
  snprintf(path, sizeof path, "%s.%s", "optimizer.param_groups.0.params", key);
  {
    int64_t v = -1;
    CHECK_OK(mmckpt_checkpoint_value_int(ckpt, path, &v));
    CHECK(v == 3);
  }
  /* leaves and tensors have no children */
  CHECK_OK(mmckpt_checkpoint_value_child_count(ckpt, "epoch", &n));
  CHECK(n == 0);
  CHECK_OK(mmckpt_checkpoint_value_child_count(ckpt, "model.fc.weight", &n));
  CHECK(n == 0);
  /* model's keys hold dots */
  CHECK_OK(mmckpt_checkpoint_value_child_key(ckpt, "model", 0, key, sizeof key, &len));
  CHECK(strcmp(key, "fc.weight") == 0);
}

static void test_errors(const mmckpt_checkpoint *ckpt) {
  int64_t i = 7;
  double f = 7;
  int32_t b = 7;
  mmckpt_value_kind kind = MMCKPT_VALUE_OTHER;
  char small[4] = "xyz";
  size_t len = 12345, n = 99;

  CHECK_STATUS(mmckpt_checkpoint_value_kind(ckpt, "nope", &kind), MMCKPT_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("nope");
  CHECK(kind == MMCKPT_VALUE_OTHER);
  CHECK_STATUS(mmckpt_checkpoint_value_int(ckpt, "args.nope", &i), MMCKPT_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("'args'");
  CHECK_STATUS(mmckpt_checkpoint_value_int(ckpt, "epoch.x", &i), MMCKPT_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("is an int");
  CHECK_STATUS(mmckpt_checkpoint_value_int(ckpt, "flags.2", &i), MMCKPT_ERR_NOT_FOUND);

  /* kind mismatches name the path and the kind */
  CHECK_STATUS(mmckpt_checkpoint_value_int(ckpt, "name", &i), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("'name'");
  CHECK_ERROR_MENTIONS("a str");
  CHECK_STATUS(mmckpt_checkpoint_value_int(ckpt, "lr", &i), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_float(ckpt, "name", &f), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_bool(ckpt, "epoch", &b), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_string(ckpt, "lr", small, sizeof small, &len),
               MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_class(ckpt, "epoch", small, sizeof small, &len),
               MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_string(ckpt, "args", small, sizeof small, &len),
               MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK(i == 7 && f == 7 && b == 7 && len == 12345);

  /* buffer too small: only *len is written */
  CHECK_STATUS(mmckpt_checkpoint_value_string(ckpt, "name", small, sizeof small, &len),
               MMCKPT_ERR_BUFFER_TOO_SMALL);
  CHECK(len == 5 && strcmp(small, "xyz") == 0);
  CHECK_ERROR_MENTIONS("name");
  len = 0;
  CHECK_STATUS(mmckpt_checkpoint_value_string(ckpt, "step", NULL, 0, &len),
               MMCKPT_ERR_BUFFER_TOO_SMALL);
  CHECK(len == 22);
  /* exactly length + 1 fits; length alone does not */
  {
    char five[5], six[6];
    CHECK_STATUS(mmckpt_checkpoint_value_string(ckpt, "name", five, sizeof five, &len),
                 MMCKPT_ERR_BUFFER_TOO_SMALL);
    CHECK_OK(mmckpt_checkpoint_value_string(ckpt, "name", six, sizeof six, &len));
    CHECK(strcmp(six, "run-1") == 0);
  }
  CHECK_STATUS(mmckpt_checkpoint_value_class(ckpt, "args", NULL, 0, &len),
               MMCKPT_ERR_BUFFER_TOO_SMALL);
  CHECK(len == strlen("argparse.Namespace"));

  /* NULL arguments */
  CHECK_STATUS(mmckpt_checkpoint_value_kind(NULL, "epoch", &kind), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("ckpt");
  CHECK_STATUS(mmckpt_checkpoint_value_kind(ckpt, NULL, &kind), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("path");
  CHECK_STATUS(mmckpt_checkpoint_value_kind(ckpt, "epoch", NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_bool(ckpt, "flags.0", NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_int(ckpt, "epoch", NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_float(ckpt, "lr", NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_complex(ckpt, "lr", &f, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_complex(ckpt, "lr", NULL, &f), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_string(ckpt, "name", NULL, 8, &len),
               MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("buf");
  CHECK_STATUS(mmckpt_checkpoint_value_string(ckpt, "name", small, sizeof small, NULL),
               MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("len");
  CHECK_STATUS(mmckpt_checkpoint_value_child_count(ckpt, "", NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_child_count(NULL, "", &n), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_child_key(ckpt, "", 0, small, sizeof small, NULL),
               MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_value_class(ckpt, NULL, small, sizeof small, &len),
               MMCKPT_ERR_NULL_ARGUMENT);
  CHECK(n == 99);
}

static void test_root_option(void) {
  mmckpt_checkpoint *ckpt = open_nested("optimizer");
  double f = 0;
  mmckpt_value_kind kind;
  if (!ckpt) return;
  CHECK_OK(mmckpt_checkpoint_value_float(ckpt, "param_groups.0.lr", &f));
  CHECK(f == 0.001);
  CHECK_STATUS(mmckpt_checkpoint_value_kind(ckpt, "epoch", &kind), MMCKPT_ERR_NOT_FOUND);
  CHECK(kind_of(ckpt, "") == MMCKPT_VALUE_DICT);
  mmckpt_checkpoint_close(ckpt);
}

int main(int argc, char **argv) {
  mmckpt_checkpoint *ckpt;
  test_init(argc, argv);
  ckpt = open_nested(NULL);
  if (ckpt) {
    test_scalars(ckpt);
    test_children(ckpt);
    test_errors(ckpt);
    mmckpt_checkpoint_close(ckpt);
  }
  test_root_option();
  return test_finish("test_values");
}
