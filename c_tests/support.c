#include "support.h"

#include <stdint.h>

int test_failures = 0;
const char *test_data_dir = NULL;

void test_init(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s <repository>/tests\n", argv[0]);
    exit(2);
  }
  test_data_dir = argv[1];
}

int test_finish(const char *name) {
  if (test_failures) {
    fprintf(stderr, "%s: %d check(s) failed\n", name, test_failures);
    return 1;
  }
  printf("%s: all checks passed\n", name);
  return 0;
}

const char *data_path(const char *relative) {
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s/%s", test_data_dir, relative);
  return buf;
}

unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  long size;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return NULL;
  }
  buf = (unsigned char *)malloc((size_t)size + 1);
  if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = (size_t)size;
  return buf;
}

/* ---- SHA-256 (FIPS 180-4), small and slow; only for checking fixture values ---- */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p) {
  uint32_t w[64], a, b, c, d, e, f, g, hh, t1, t2;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           (uint32_t)p[4 * i + 3];
  for (i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
  for (i = 0; i < 64; i++) {
    t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

void sha256_hex(const void *data, size_t len, char out[65]) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const unsigned char *p = (const unsigned char *)data;
  unsigned char tail[128];
  size_t full = len / 64 * 64, rest = len - full, tail_len, i;
  uint64_t bits = (uint64_t)len * 8;
  for (i = 0; i < full; i += 64) sha256_block(h, p + i);
  memset(tail, 0, sizeof tail);
  if (rest) memcpy(tail, p + full, rest);
  tail[rest] = 0x80;
  tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
  for (i = 0; i < 8; i++) tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
  for (i = 0; i < tail_len; i += 64) sha256_block(h, tail + i);
  for (i = 0; i < 8; i++) sprintf(out + 8 * i, "%08x", (unsigned)h[i]);
  out[64] = 0;
}

unsigned char *gather_row_major(const mmckpt_tensor *t) {
  size_t itemsize = mmckpt_dtype_itemsize(t->dtype);
  size_t total = (size_t)t->numel * itemsize;
  unsigned char *out = (unsigned char *)malloc(total ? total : 1);
  int64_t index[64];
  uint64_t n;
  uint32_t d;
  if (!out || t->numel == 0) return out;
  memset(index, 0, sizeof index);
  for (n = 0; n < t->numel; n++) {
    int64_t offset = 0;
    for (d = 0; d < t->ndim; d++) offset += index[d] * t->strides[d];
    memcpy(out + n * itemsize, (const unsigned char *)t->data + (size_t)offset * itemsize, itemsize);
    for (d = t->ndim; d-- > 0;) {
      if (++index[d] < t->shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

static int parse_dims(char *text, int64_t *dims) {
  int n = 0;
  char *tok;
  if (!*text) return 0;
  for (tok = strtok(text, ","); tok && n < 16; tok = strtok(NULL, ",")) dims[n++] = strtoll(tok, NULL, 10);
  return n;
}

manifest_row *load_manifest(size_t *count) {
  size_t len = 0, cap = 128, n = 0;
  unsigned char *text = read_file(data_path("fixtures/manifest.tsv"), &len);
  manifest_row *rows = (manifest_row *)calloc(cap, sizeof *rows);
  char *line, *save = NULL;
  if (!text || !rows) {
    fprintf(stderr, "cannot read %s\n", data_path("fixtures/manifest.tsv"));
    exit(2);
  }
  text[len] = 0;
  for (line = strtok_r((char *)text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *cols[11];
    char *p = line;
    int c;
    manifest_row *r;
    if (line[0] == '#') continue;
    for (c = 0; c < 11; c++) {
      cols[c] = p;
      p = strchr(p, '\t');
      if (p) *p++ = 0;
      else if (c < 10) break;
    }
    if (c < 11) continue;
    if (n == cap) {
      cap *= 2;
      rows = (manifest_row *)realloc(rows, cap * sizeof *rows);
    }
    r = &rows[n++];
    memset(r, 0, sizeof *r);
    snprintf(r->file, sizeof r->file, "%s", cols[0]);
    snprintf(r->name, sizeof r->name, "%s", cols[1]);
    snprintf(r->dtype, sizeof r->dtype, "%s", cols[2]);
    r->ndim = parse_dims(cols[3], r->shape);
    parse_dims(cols[4], r->stride);
    r->storage_offset = strtoll(cols[5], NULL, 10);
    r->numel = strtoull(cols[6], NULL, 10);
    r->is_parameter = atoi(cols[7]);
    r->requires_grad = atoi(cols[8]);
    r->storage_group = atoi(cols[9]);
    snprintf(r->sha256, sizeof r->sha256, "%s", cols[10]);
  }
  free(text);
  *count = n;
  return rows;
}
