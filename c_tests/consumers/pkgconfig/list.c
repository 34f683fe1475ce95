/* list.c: prints each tensor of a checkpoint with its layout. */
#include <inttypes.h>
#include <stdio.h>

#include <mmckpt.h>

static void print_dims(const char *label, const int64_t *dims, uint32_t ndim) {
  printf(" %s [", label);
  for (uint32_t d = 0; d < ndim; d++) printf(d ? ", %" PRId64 : "%" PRId64, dims[d]);
  printf("]");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CHECKPOINT\n", argv[0]);
    return 2;
  }
  mmckpt_checkpoint *ckpt = NULL;
  if (mmckpt_checkpoint_open(argv[1], NULL, &ckpt) != MMCKPT_OK) {
    fprintf(stderr, "%s\n", mmckpt_last_error());
    return 1;
  }
  for (size_t i = 0; i < mmckpt_checkpoint_tensor_count(ckpt); i++) {
    mmckpt_tensor t;
    if (mmckpt_checkpoint_tensor_at(ckpt, i, &t) != MMCKPT_OK) { /* e.g. a sparse tensor */
      printf("%s: %s\n", mmckpt_checkpoint_name_at(ckpt, i), mmckpt_last_error());
      continue;
    }
    printf("%s %s", t.name, mmckpt_dtype_name(t.dtype));
    print_dims("shape", t.shape, t.ndim);
    print_dims("strides", t.strides, t.ndim);
    printf(" %s", (t.flags & MMCKPT_TENSOR_CONTIGUOUS) ? "contiguous" : "strided");
    /* Views keep torch's strides: element [i0, i1, ...] is data[i0*strides[0] + i1*strides[1]
       + ...] (in elements), contiguous or not. Here: the last element. */
    if (t.dtype == MMCKPT_DTYPE_FLOAT32 && t.numel > 0) {
      int64_t at = 0;
      for (uint32_t d = 0; d < t.ndim; d++) at += (t.shape[d] - 1) * t.strides[d];
      float last = ((const float *)t.data)[at];
      printf(" last %g", (t.flags & MMCKPT_TENSOR_NEG) ? -last : last); /* torch's lazy neg */
    }
    printf("\n");
  }
  mmckpt_checkpoint_close(ckpt);
  return 0;
}
