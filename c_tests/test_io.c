/* Storage-aware reading through the C ABI: the offset index (mmckpt_checkpoint_tensor_range:
   each range read with plain pread is the tensor's bytes), the CRC-32 check
   (MMCKPT_OPEN_VERIFY_CRC), per-tensor reads (MMCKPT_OPEN_PREAD: same tensors as a mapped
   open, no mapping of the file) and pre-1.0 tar checkpoints. */
#define _XOPEN_SOURCE 700
#include "support.h"

#include <fcntl.h>
#include <unistd.h>

static const char *const files[] = {"dtypes.pt",        "forms.pt",      "nested.pt",
                                     "proto4.pt",        "align4096.pt",  "script.pt",
                                     "legacy.pt",        "legacy_odd.pt", "legacy_proto4.pt",
                                     "script_nested.pt", "bigendian.pt",  "location.pt",
                                     "transposed.pt",    "shards/pytorch_model.bin.index.json"};

/* Reads len bytes at offset of path with pread; malloc'd (at least 1 byte), NULL on failure. */
static unsigned char *pread_range(const char *path, uint64_t offset, uint64_t len) {
  unsigned char *buf = malloc(len ? len : 1);
  int fd = open(path, O_RDONLY);
  uint64_t done = 0;
  if (!buf || fd < 0) {
    free(buf);
    if (fd >= 0) close(fd);
    return NULL;
  }
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, (off_t)(offset + done));
    if (n <= 0) {
      free(buf);
      close(fd);
      return NULL;
    }
    done += (uint64_t)n;
  }
  close(fd);
  return buf;
}

static void test_ranges_are_the_tensors(void) {
  size_t f, i, exact = 0, inexact = 0;
  for (f = 0; f < sizeof files / sizeof files[0]; f++) {
    mmckpt_checkpoint *ckpt = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s", data_path("fixtures/"));
    strncat(path, files[f], sizeof path - strlen(path) - 1);
    CHECK_OK(mmckpt_checkpoint_open(path, NULL, &ckpt));
    if (!ckpt) continue;
    for (i = 0; i < mmckpt_checkpoint_tensor_count(ckpt); i++) {
      mmckpt_tensor_range r;
      mmckpt_tensor t;
      unsigned char *bytes;
      uint32_t d;
      CHECK_OK(mmckpt_checkpoint_tensor_range(ckpt, i, &r));
      CHECK_OK(mmckpt_checkpoint_tensor_at(ckpt, i, &t));
      CHECK(r.path != NULL);
      if (!r.path) continue;
      CHECK(r.length == t.nbytes);
      CHECK(r.dtype == t.dtype && r.ndim == t.ndim && r.storage_id == t.storage_id);
      for (d = 0; d < r.ndim; d++) CHECK(r.shape[d] == t.shape[d] && r.strides[d] == t.strides[d]);
      CHECK(r.offset >= r.storage_offset &&
            r.offset + r.length <= r.storage_offset + r.storage_length);
      bytes = pread_range(r.path, r.offset, r.length);
      CHECK(bytes != NULL);
      if (!bytes) continue;
      if (r.byte_swap_unit > 1) {
        uint64_t k, u = r.byte_swap_unit;
        CHECK(!(r.flags & MMCKPT_RANGE_EXACT));
        for (k = 0; k + u <= r.length; k += u) {
          uint64_t a;
          for (a = 0; a < u / 2; a++) {
            unsigned char tmp = bytes[k + a];
            bytes[k + a] = bytes[k + u - 1 - a];
            bytes[k + u - 1 - a] = tmp;
          }
        }
      }
      CHECK(memcmp(bytes, t.data, r.length) == 0);
      if (r.flags & MMCKPT_RANGE_EXACT) {
        exact++;
        CHECK(t.flags & MMCKPT_TENSOR_CONTIGUOUS);
        CHECK(r.length == t.numel * mmckpt_dtype_itemsize(t.dtype));
      } else {
        inexact++;
      }
      CHECK(!!(r.flags & MMCKPT_RANGE_WHOLE_STORAGE) == (r.length == r.storage_length));
      free(bytes);
    }
    {
      mmckpt_tensor_range r;
      CHECK_STATUS(mmckpt_checkpoint_tensor_range(ckpt, mmckpt_checkpoint_tensor_count(ckpt), &r),
                   MMCKPT_ERR_NOT_FOUND);
      CHECK_STATUS(mmckpt_checkpoint_tensor_range(ckpt, 0, NULL), MMCKPT_ERR_NULL_ARGUMENT);
    }
    mmckpt_checkpoint_close(ckpt);
  }
  CHECK(exact > 50 && inexact > 5);
}

static mmckpt_status open_with(const char *path, uint32_t flags, mmckpt_checkpoint **out) {
  mmckpt_open_options opts;
  mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION);
  opts.flags = flags;
  return mmckpt_checkpoint_open(path, &opts, out);
}

static void test_verify_crc(void) {
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_tensor_range r;
  char good[512], bad[] = "/tmp/mmckpt_test_io_XXXXXX";
  unsigned char *bytes;
  size_t len = 0;
  int fd;
  snprintf(good, sizeof good, "%s", data_path("fixtures/nested.pt"));
  CHECK_OK(open_with(good, MMCKPT_OPEN_VERIFY_CRC, &ckpt));
  CHECK(ckpt != NULL);
  if (!ckpt) return;
  CHECK_OK(mmckpt_checkpoint_tensor_range(ckpt, 0, &r));
  mmckpt_checkpoint_close(ckpt);
  /* One bit of the first tensor's storage flipped: the check names its record. */
  bytes = read_file(good, &len);
  CHECK(bytes != NULL && r.offset < len);
  if (!bytes) return;
  bytes[r.offset] ^= 0x08;
  fd = mkstemp(bad);
  CHECK(fd >= 0 && write(fd, bytes, len) == (ssize_t)len);
  close(fd);
  free(bytes);
  ckpt = NULL;
  CHECK_STATUS(open_with(bad, MMCKPT_OPEN_VERIFY_CRC, &ckpt), MMCKPT_ERR_FORMAT);
  CHECK(ckpt == NULL);
  CHECK_ERROR_MENTIONS("is corrupt");
  CHECK_ERROR_MENTIONS("nested/data/");
  CHECK_ERROR_MENTIONS("the zip directory records 0x");
  /* Without the flag the corrupted file opens, as torch loads it. */
  CHECK_OK(open_with(bad, 0, &ckpt));
  mmckpt_checkpoint_close(ckpt);
  unlink(bad);
  /* A legacy file records no checksums. */
  ckpt = NULL;
  CHECK_STATUS(open_with(data_path("fixtures/legacy.pt"), MMCKPT_OPEN_VERIFY_CRC, &ckpt),
               MMCKPT_ERR_UNSUPPORTED);
  CHECK_ERROR_MENTIONS("no checksums");
}

/* True when /proc/self/maps has a line ending in the real path of `path`. */
static int is_mapped_file(const char *path) {
  char real[4096], line[8192];
  int found = 0;
  FILE *maps;
  if (!realpath(path, real)) return -1;
  maps = fopen("/proc/self/maps", "r");
  if (!maps) return -1;
  while (fgets(line, sizeof line, maps)) {
    size_t n = strlen(line), r = strlen(real);
    if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
    if (n >= r && strcmp(line + n - r, real) == 0) found = 1;
  }
  fclose(maps);
  return found;
}

static void test_pread_mode(void) {
  size_t f, i;
  for (f = 0; f < sizeof files / sizeof files[0]; f++) {
    mmckpt_checkpoint *mapped = NULL, *read = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s", data_path("fixtures/"));
    strncat(path, files[f], sizeof path - strlen(path) - 1);
    CHECK_OK(open_with(path, MMCKPT_OPEN_PREAD, &read));
    if (!read) continue;
    /* A shard index's shards are files of their own. */
    if (!strstr(path, ".index.json")) CHECK(is_mapped_file(path) == 0);
    CHECK_OK(open_with(path, 0, &mapped));
    if (!mapped) {
      mmckpt_checkpoint_close(read);
      continue;
    }
    CHECK(mmckpt_checkpoint_tensor_count(read) == mmckpt_checkpoint_tensor_count(mapped));
    for (i = 0; i < mmckpt_checkpoint_tensor_count(mapped); i++) {
      mmckpt_tensor a, b;
      uint32_t d;
      CHECK_OK(mmckpt_checkpoint_tensor_at(mapped, i, &a));
      CHECK_OK(mmckpt_checkpoint_tensor_at(read, i, &b));
      CHECK(strcmp(a.name, b.name) == 0 && a.dtype == b.dtype && a.ndim == b.ndim);
      for (d = 0; d < a.ndim && d < b.ndim; d++)
        CHECK(a.shape[d] == b.shape[d] && a.strides[d] == b.strides[d]);
      CHECK(a.nbytes == b.nbytes && memcmp(a.data, b.data, a.nbytes) == 0);
      CHECK(!(b.flags & MMCKPT_TENSOR_MAPPED) && b.file_offset == MMCKPT_NO_OFFSET);
      {
        size_t align = mmckpt_dtype_itemsize(b.dtype) < 8 ? mmckpt_dtype_itemsize(b.dtype) : 8;
        CHECK(align == 0 || (uintptr_t)b.data % align == 0);
      }
    }
    mmckpt_checkpoint_close(mapped);
    mmckpt_checkpoint_close(read);
  }
  {
    mmckpt_checkpoint *ckpt = NULL;
    CHECK_STATUS(open_with(data_path("fixtures/nested.pt"), MMCKPT_OPEN_PREAD | MMCKPT_OPEN_READ,
                           &ckpt),
                 MMCKPT_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("MMCKPT_OPEN_READ and MMCKPT_OPEN_PREAD exclude each other");
    CHECK_OK(open_with(data_path("fixtures/nested.pt"), MMCKPT_OPEN_AUTO, &ckpt));
    mmckpt_checkpoint_close(ckpt);
    ckpt = NULL;
    CHECK_OK(open_with(data_path("fixtures/nested.pt"), MMCKPT_OPEN_PREAD | MMCKPT_OPEN_VERIFY_CRC,
                       &ckpt));
    mmckpt_checkpoint_close(ckpt);
  }
}

static void test_tar(void) {
  static const uint32_t modes[] = {0, MMCKPT_OPEN_READ, MMCKPT_OPEN_PREAD};
  const char *path = data_path("data/tar/state_dict.pt");
  char copy[512];
  size_t m;
  snprintf(copy, sizeof copy, "%s", path);
  for (m = 0; m < sizeof modes / sizeof modes[0]; m++) {
    mmckpt_checkpoint *ckpt = NULL;
    mmckpt_tensor w, tied, tail;
    CHECK_OK(open_with(copy, modes[m], &ckpt));
    if (!ckpt) continue;
    CHECK(strcmp(mmckpt_checkpoint_format(ckpt), "tar") == 0);
    CHECK(mmckpt_checkpoint_tensor_count(ckpt) == 7);
    CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "fc.weight", &w));
    CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "tied", &tied));
    CHECK_OK(mmckpt_checkpoint_tensor(ckpt, "tail", &tail));
    /* Tied tensors share a storage; "tail" views its last four floats. */
    CHECK(w.storage_id == tied.storage_id && w.data == tied.data);
    CHECK(tail.storage_id == w.storage_id && tail.storage_offset == 8);
    CHECK(memcmp((const float *)w.data + 8, tail.data, 16) == 0);
    CHECK((uintptr_t)w.data % 4 == 0);
    mmckpt_checkpoint_close(ckpt);
  }
  {
    mmckpt_checkpoint *ckpt = NULL;
    CHECK_STATUS(open_with(copy, MMCKPT_OPEN_STRICT, &ckpt), MMCKPT_ERR_UNSAFE);
    CHECK_ERROR_MENTIONS("weights_only");
  }
}

int main(int argc, char **argv) {
  test_init(argc, argv);
  test_ranges_are_the_tensors();
  test_verify_crc();
  test_pread_mode();
  test_tar();
  return test_finish("test_io");
}
