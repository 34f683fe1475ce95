/* Version, status text, dtypes, options, and argument checking of the C ABI. */
#include "support.h"

static void test_version(void) {
  CHECK(MMCKPT_VERSION_NUMBER == MMCKPT_VERSION_MAJOR * 10000 + MMCKPT_VERSION_MINOR * 100 + MMCKPT_VERSION_PATCH);
  CHECK(mmckpt_version_number() == MMCKPT_VERSION_NUMBER);
  {
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", MMCKPT_VERSION_MAJOR, MMCKPT_VERSION_MINOR,
             MMCKPT_VERSION_PATCH);
    CHECK(strcmp(mmckpt_version(), expected) == 0);
  }
}

static void test_status_text(void) {
  unsigned s;
  CHECK(strstr(mmckpt_status_str(MMCKPT_OK), "MMCKPT_OK") != NULL);
  CHECK(strstr(mmckpt_status_str(MMCKPT_ERR_FORMAT), "MMCKPT_ERR_FORMAT") != NULL);
  CHECK(strstr(mmckpt_status_str(MMCKPT_ERR_PANIC), "MMCKPT_ERR_PANIC") != NULL);
  for (s = 0; s < 200; s++) CHECK(mmckpt_status_str((mmckpt_status)s) != NULL);
  CHECK(mmckpt_status_str((mmckpt_status)0xffffffffu) != NULL);
  CHECK(MMCKPT_ERR_NULL_ARGUMENT == 1 && MMCKPT_ERR_NO_MEMORY == 15 && MMCKPT_ERR_PANIC == 99);
  CHECK(mmckpt_last_error() != NULL);
}

static void test_dtypes(void) {
  static const struct { mmckpt_dtype d; size_t size; const char *name; } table[] = {
      {MMCKPT_DTYPE_FLOAT32, 4, "float32"},     {MMCKPT_DTYPE_FLOAT64, 8, "float64"},
      {MMCKPT_DTYPE_FLOAT16, 2, "float16"},     {MMCKPT_DTYPE_BFLOAT16, 2, "bfloat16"},
      {MMCKPT_DTYPE_INT8, 1, "int8"},           {MMCKPT_DTYPE_UINT8, 1, "uint8"},
      {MMCKPT_DTYPE_INT16, 2, "int16"},         {MMCKPT_DTYPE_INT32, 4, "int32"},
      {MMCKPT_DTYPE_INT64, 8, "int64"},         {MMCKPT_DTYPE_BOOL, 1, "bool"},
      {MMCKPT_DTYPE_COMPLEX64, 8, "complex64"}, {MMCKPT_DTYPE_COMPLEX128, 16, "complex128"},
      {MMCKPT_DTYPE_UINT16, 2, "uint16"},       {MMCKPT_DTYPE_UINT32, 4, "uint32"},
      {MMCKPT_DTYPE_UINT64, 8, "uint64"},       {MMCKPT_DTYPE_COMPLEX32, 4, "complex32"},
      {MMCKPT_DTYPE_FLOAT8_E4M3FN, 1, "float8_e4m3fn"}, {MMCKPT_DTYPE_FLOAT8_E5M2, 1, "float8_e5m2"},
  };
  size_t i;
  for (i = 0; i < sizeof table / sizeof table[0]; i++) {
    CHECK(mmckpt_dtype_itemsize(table[i].d) == table[i].size);
    CHECK(mmckpt_dtype_name(table[i].d) && strcmp(mmckpt_dtype_name(table[i].d), table[i].name) == 0);
  }
  CHECK(MMCKPT_DTYPE_FLOAT32 == 1);
  CHECK(mmckpt_dtype_itemsize((mmckpt_dtype)0) == 0);
  CHECK(mmckpt_dtype_itemsize((mmckpt_dtype)12345) == 0);
  CHECK(mmckpt_dtype_name((mmckpt_dtype)0) == NULL);
  CHECK(mmckpt_dtype_name((mmckpt_dtype)0xffffffffu) == NULL);
}

static void test_arguments(void) {
  mmckpt_checkpoint *ckpt = (mmckpt_checkpoint *)(void *)0x1; /* must stay untouched */
  mmckpt_open_options opts;
  mmckpt_tensor t;
  const char *path = data_path("fixtures/forms.pt");

  CHECK_STATUS(mmckpt_checkpoint_open(NULL, NULL, &ckpt), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("path");
  CHECK_STATUS(mmckpt_checkpoint_open(path, NULL, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("out");
  CHECK(ckpt == (mmckpt_checkpoint *)(void *)0x1);

  CHECK_STATUS(mmckpt_open_options_init(NULL, MMCKPT_OPEN_OPTIONS_VERSION), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION), MMCKPT_OK);
  CHECK(opts.version == MMCKPT_OPEN_OPTIONS_VERSION && opts.flags == 0 && opts.root == NULL);
  opts.version = 0;
  CHECK_STATUS(mmckpt_checkpoint_open(path, &opts, &ckpt), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("mmckpt_open_options_init");
  mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION);
  opts.flags = 1u << 30;
  CHECK_STATUS(mmckpt_checkpoint_open(path, &opts, &ckpt), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("flags");
  CHECK(ckpt == (mmckpt_checkpoint *)(void *)0x1);

  CHECK(mmckpt_checkpoint_tensor_count(NULL) == 0);
  CHECK_STATUS(mmckpt_checkpoint_tensor_at(NULL, 0, &t), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_tensor(NULL, "x", &t), MMCKPT_ERR_NULL_ARGUMENT);
  mmckpt_checkpoint_close(NULL);

  ckpt = NULL;
  CHECK_OK(mmckpt_checkpoint_open(path, NULL, &ckpt));
  CHECK(ckpt != NULL);
  CHECK_STATUS(mmckpt_checkpoint_tensor_at(ckpt, 0, NULL), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_tensor(ckpt, NULL, &t), MMCKPT_ERR_NULL_ARGUMENT);
  CHECK_STATUS(mmckpt_checkpoint_tensor_at(ckpt, 100000, &t), MMCKPT_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("100000");
  CHECK_STATUS(mmckpt_checkpoint_tensor(ckpt, "no.such.tensor", &t), MMCKPT_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("no.such.tensor");
  CHECK(strcmp(mmckpt_checkpoint_format(ckpt), "zip") == 0);
  CHECK(mmckpt_checkpoint_name_at(ckpt, 100000) == NULL);
  mmckpt_checkpoint_close(ckpt);
}

/* A legacy file's misaligned storages: copied into aligned memory on first use by default,
 * handed out as the mapping's bytes (MAPPED, possibly misaligned) with MMCKPT_OPEN_UNALIGNED;
 * the same bytes either way. */
static void test_unaligned_flag(void) {
  mmckpt_checkpoint *plain = NULL, *as_is = NULL;
  mmckpt_open_options opts;
  size_t i, n, misaligned = 0;
  char path[4096];
  snprintf(path, sizeof path, "%s", data_path("fixtures/legacy_odd.pt"));
  CHECK_OK(mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION));
  opts.flags = MMCKPT_OPEN_UNALIGNED;
  CHECK_OK(mmckpt_checkpoint_open(path, NULL, &plain));
  CHECK_OK(mmckpt_checkpoint_open(path, &opts, &as_is));
  if (!plain || !as_is) return;
  n = mmckpt_checkpoint_tensor_count(plain);
  CHECK(n > 0 && n == mmckpt_checkpoint_tensor_count(as_is));
  for (i = 0; i < n; i++) {
    mmckpt_tensor a, b;
    size_t itemsize;
    CHECK_OK(mmckpt_checkpoint_tensor_at(plain, i, &a));
    CHECK_OK(mmckpt_checkpoint_tensor_at(as_is, i, &b));
    itemsize = mmckpt_dtype_itemsize(a.dtype);
    if (itemsize > 8) itemsize = 8;
    CHECK(itemsize > 0 && (uintptr_t)a.data % itemsize == 0);
    CHECK(b.flags & MMCKPT_TENSOR_MAPPED);
    CHECK(a.nbytes == b.nbytes && memcmp(a.data, b.data, (size_t)a.nbytes) == 0);
    if ((uintptr_t)b.data % itemsize != 0) {
      misaligned++;
      CHECK(!(a.flags & MMCKPT_TENSOR_MAPPED));
    }
  }
  CHECK(misaligned > 0);
  mmckpt_checkpoint_close(plain);
  mmckpt_checkpoint_close(as_is);
}

int main(int argc, char **argv) {
  test_init(argc, argv);
  test_version();
  test_status_text();
  test_dtypes();
  test_arguments();
  test_unaligned_flag();
  {
    char hex[65];
    sha256_hex("abc", 3, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
  }
  return test_finish("test_api");
}
