/* Reads torch views of one storage through their strides and checks that they agree:
   forms.pt holds slice = base[2:5], transpose = base.t() and narrow = base.narrow(1, 1, 3) of
   one 8x6 tensor `base`, so slice[i][j], transpose[j][i+2] and narrow[i+2][j-1] are the same
   number. Prints a line and exits 0 when all of it holds, else names what did not. */
#include <inttypes.h>
#include <stdio.h>

#include <mmckpt.h>

static int failures = 0;

static void expect(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "check_views: %s\n", what);
    failures++;
  }
}

static float at2(const mmckpt_tensor *t, int64_t i, int64_t j) {
  return ((const float *)t->data)[i * t->strides[0] + j * t->strides[1]];
}

static int describe(mmckpt_checkpoint *ckpt, const char *name, mmckpt_tensor *out) {
  if (mmckpt_checkpoint_tensor(ckpt, name, out) != MMCKPT_OK) {
    fprintf(stderr, "check_views: %s: %s\n", name, mmckpt_last_error());
    return 0;
  }
  return out->dtype == MMCKPT_DTYPE_FLOAT32 && out->ndim == 2;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s forms.pt\n", argv[0]);
    return 2;
  }
  expect(mmckpt_version_number() == MMCKPT_VERSION_NUMBER,
         "the library's version differs from the header's");
  mmckpt_checkpoint *ckpt = NULL;
  if (mmckpt_checkpoint_open(argv[1], NULL, &ckpt) != MMCKPT_OK) {
    fprintf(stderr, "check_views: %s\n", mmckpt_last_error());
    return 1;
  }
  mmckpt_tensor slice, transpose, narrow;
  if (!describe(ckpt, "slice", &slice) || !describe(ckpt, "transpose", &transpose) ||
      !describe(ckpt, "narrow", &narrow)) {
    fprintf(stderr, "check_views: slice, transpose and narrow must be 2-d float32\n");
    mmckpt_checkpoint_close(ckpt);
    return 1;
  }
  expect(slice.shape[0] == 3 && slice.shape[1] == 6 && slice.storage_offset == 12,
         "slice is not base[2:5]");
  expect(transpose.shape[0] == 6 && transpose.shape[1] == 8 && transpose.strides[0] == 1 &&
             transpose.strides[1] == 6,
         "transpose is not base.t()");
  expect(narrow.shape[0] == 8 && narrow.shape[1] == 3 && narrow.storage_offset == 1,
         "narrow is not base.narrow(1, 1, 3)");
  expect((slice.flags & MMCKPT_TENSOR_CONTIGUOUS) &&
             !(transpose.flags & MMCKPT_TENSOR_CONTIGUOUS) &&
             !(narrow.flags & MMCKPT_TENSOR_CONTIGUOUS),
         "slice must be flagged contiguous, transpose and narrow not");
  expect(slice.storage_id == transpose.storage_id && slice.storage_id == narrow.storage_id,
         "the three views do not share one storage");
  int compared = 0;
  for (int64_t i = 0; failures == 0 && i < 3; i++) {
    for (int64_t j = 0; j < 6; j++) {
      float value = at2(&slice, i, j);
      expect(at2(&transpose, j, i + 2) == value, "transpose[j][i+2] != slice[i][j]");
      if (j >= 1 && j <= 3) {
        expect(at2(&narrow, i + 2, j - 1) == value, "narrow[i+2][j-1] != slice[i][j]");
        compared++;
      }
      compared++;
    }
  }
  if (failures == 0) {
    printf("mmckpt %s: slice, transpose and narrow of one storage agree in %d elements read "
           "through their strides\n",
           mmckpt_version(), compared);
  }
  mmckpt_checkpoint_close(ckpt);
  return failures == 0 ? 0 : 1;
}
