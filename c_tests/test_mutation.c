/* Deterministic mutation test through the C ABI: thousands of mutants of every torch-written
   fixture (bit flips, truncations at every structural boundary, byte-range duplications,
   swapped zip entries, substituted pickle opcodes; the same classes and seed as
   tests/mutants/mod.rs). Each mutant is written to a temp file and opened (alternately
   mapped, MMCKPT_OPEN_READ, and STRICT); when it opens it is walked fully: every name looked up,
   every tensor's bytes [data, data + nbytes) read and summed. A mapped tensor's range must lie
   inside the file (file_offset + nbytes <= file size); a READ-mode tensor lives in a heap buffer,
   where AddressSanitizer and valgrind check every byte read. A status is the only acceptable
   failure: a crash, a hang, MMCKPT_ERR_PANIC or an out-of-file range fails the test.
   MMCKPT_TEST_SKIP_LARGE (set under valgrind) runs a tenth of the random mutants.
   The mutants of each fixture must be those of the Rust generator: their count and FNV-1a digest
   are compared with tests/mutants/digests.tsv, which tests/mutation.rs checks against
   tests/mutants/mod.rs. */
#include "support.h"

#include <unistd.h>

static const char *const fixtures[] = {
    "fixtures/dtypes.pt", "fixtures/forms.pt",     "fixtures/nested.pt", "fixtures/proto4.pt",
    "fixtures/align4096.pt", "fixtures/script.pt", "fixtures/legacy.pt", "data/zip/tiny_torch.pt",
    "fixtures/safetensors/dtypes.safetensors",
};

static const unsigned char opcodes[] =
    "().012BCFGIJKLMNPQRSTUVX]abcdeghijlopqrstu}\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b"
    "\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98";

static char tmp_path[256];
static size_t mutants, opened, tensors_read;
static unsigned long long byte_sum;
static double scale = 1.0;

/* FNV-1a (64-bit) over each mutant's length (8 bytes, little-endian) and bytes, in order: the
   digest of tests/mutants/digests.tsv. */
static uint64_t digest;
static void digest_update(const unsigned char *bytes, size_t len) {
  size_t i;
  for (i = 0; i < len; i++) digest = (digest ^ bytes[i]) * 0x100000001b3ull;
}
static void digest_mutant(const unsigned char *bytes, size_t len) {
  unsigned char len_le[8];
  int k;
  for (k = 0; k < 8; k++) len_le[k] = (unsigned char)((uint64_t)len >> (8 * k));
  digest_update(len_le, 8);
  digest_update(bytes, len);
}

/* Compares one fixture's mutant count and digest with its row for this scale in
   tests/mutants/digests.tsv; a scale the file does not list is reported and not compared. */
static void check_digest(const char *file, size_t count) {
  size_t len = 0;
  unsigned char *bytes = read_file(data_path("mutants/digests.tsv"), &len);
  char *text = bytes ? (char *)realloc(bytes, len + 1) : NULL, *line, *save = NULL;
  int found = 0;
  CHECK(text != NULL);
  if (!text) {
    free(bytes);
    return;
  }
  text[len] = 0;
  for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char name[256];
    double row_scale;
    unsigned long long row_count, row_digest;
    if (line[0] == '#') continue;
    if (sscanf(line, "%255[^\t]\t%lf\t%llu\t%llx", name, &row_scale, &row_count, &row_digest) != 4) {
      fprintf(stderr, "digests.tsv: bad line: %s\n", line);
      test_failures++;
      continue;
    }
    if (strcmp(name, file) != 0 || row_scale != scale) continue;
    found = 1;
    if (row_count != count || row_digest != digest) {
      fprintf(stderr,
              "%s: %zu mutants, digest %016llx; tests/mutants/digests.tsv (the Rust generator) "
              "says %llu, %016llx: the C and Rust generators disagree\n",
              file, count, (unsigned long long)digest, row_count, row_digest);
      test_failures++;
    }
  }
  if (!found) fprintf(stderr, "%s: digests.tsv has no row for scale %g; not compared\n", file, scale);
  free(text);
}

static uint64_t rng_state;
static uint64_t rng_next(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static size_t rng_below(size_t n) { return (size_t)(rng_next() % (n ? n : 1)); }
static size_t scaled(size_t base) {
  size_t n = (size_t)((double)base * scale);
  return n ? n : 1;
}

static size_t u16_at(const unsigned char *b, size_t len, size_t at, int *ok) {
  if (at + 2 > len) { *ok = 0; return 0; }
  return (size_t)b[at] | (size_t)b[at + 1] << 8;
}
static size_t u32_at(const unsigned char *b, size_t len, size_t at, int *ok) {
  if (at + 4 > len) { *ok = 0; return 0; }
  return (size_t)b[at] | (size_t)b[at + 1] << 8 | (size_t)b[at + 2] << 16 | (size_t)b[at + 3] << 24;
}

/* ---- modules: a skeleton of the checkpoint, assign-loaded; copy-loaded when small ---- */
static size_t modules_loaded;

static void check_no_panic(mmckpt_status st, const char *what, const char *step) {
  if (st == MMCKPT_ERR_PANIC) {
    fprintf(stderr, "%s: %s: panic: %s\n", what, step, mmckpt_last_error());
    test_failures++;
  }
}

static void load_into_modules(mmckpt_checkpoint *ckpt, const char *what) {
  mmckpt_module *m = NULL;
  mmckpt_load_options opts;
  size_t i, total = 0;
  mmckpt_status st = mmckpt_module_from_checkpoint(ckpt, &m);
  check_no_panic(st, what, "module_from_checkpoint");
  if (st != MMCKPT_OK) return;
  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  opts.flags = MMCKPT_LOAD_ASSIGN; /* non-strict */
  check_no_panic(mmckpt_module_load(m, ckpt, &opts, NULL), what, "assign load");
  for (i = 0; i < mmckpt_module_count(m); i++) {
    mmckpt_tensor e;
    if (mmckpt_module_at(m, i, &e) != MMCKPT_OK) continue;
    if (e.data && e.nbytes > 0) byte_sum += ((const volatile unsigned char *)e.data)[e.nbytes - 1];
    total += (size_t)e.numel * mmckpt_dtype_itemsize(e.dtype);
  }
  mmckpt_module_free(m);
  if (total > (8u << 20)) return; /* copy loads allocate; keep the test small */
  m = NULL;
  if (mmckpt_module_from_checkpoint(ckpt, &m) != MMCKPT_OK) return;
  check_no_panic(mmckpt_module_materialize(m), what, "materialize");
  mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION);
  opts.flags = 0; /* non-strict copy */
  check_no_panic(mmckpt_module_load(m, ckpt, &opts, NULL), what, "copy load");
  mmckpt_module_free(m);
  modules_loaded++;
}

/* ---- the walk ---- */
static void walk(mmckpt_checkpoint *ckpt, size_t file_len, const char *what) {
  size_t i, n = mmckpt_checkpoint_tensor_count(ckpt);
  for (i = 0; i < n; i++) {
    mmckpt_tensor t, by_name;
    mmckpt_status st, st2;
    const char *name = mmckpt_checkpoint_name_at(ckpt, i);
    CHECK(name != NULL);
    if (!name) continue;
    st = mmckpt_checkpoint_tensor_at(ckpt, i, &t);
    st2 = mmckpt_checkpoint_tensor(ckpt, name, &by_name);
    if (st == MMCKPT_ERR_PANIC || st2 == MMCKPT_ERR_PANIC) {
      fprintf(stderr, "%s: panic: %s\n", what, mmckpt_last_error());
      test_failures++;
    }
    if (st != MMCKPT_OK) continue;
    if (t.nbytes > 0) CHECK(t.data != NULL);
    if (t.flags & MMCKPT_TENSOR_MAPPED) {
      if (t.file_offset == MMCKPT_NO_OFFSET || t.file_offset > file_len ||
          t.nbytes > file_len - t.file_offset) {
        fprintf(stderr, "%s: tensor '%s' bytes %llu..+%llu are outside the %zu-byte file\n", what,
                name, (unsigned long long)t.file_offset, (unsigned long long)t.nbytes, file_len);
        test_failures++;
        continue;
      }
    }
    {
      const volatile unsigned char *p = (const volatile unsigned char *)t.data;
      uint64_t k;
      for (k = 0; k < t.nbytes; k++) byte_sum += p[k];
    }
    tensors_read++;
  }
  load_into_modules(ckpt, what);
}

static void try_mutant(const unsigned char *bytes, size_t len, const char *file, const char *kind) {
  FILE *f = fopen(tmp_path, "wb");
  mmckpt_open_options opts;
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_status st;
  char what[256];
  digest_mutant(bytes, len);
  CHECK(f != NULL);
  if (!f) return;
  if (len) CHECK(fwrite(bytes, 1, len, f) == len);
  fclose(f);
  mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION);
  switch (mutants % 3) {
    case 0: break;
    case 1: opts.flags = MMCKPT_OPEN_READ; break;
    default: opts.flags = MMCKPT_OPEN_STRICT; break;
  }
  snprintf(what, sizeof what, "%s: mutant %zu (%s)", file, mutants, kind);
  st = mmckpt_checkpoint_open(tmp_path, &opts, &ckpt);
  mutants++;
  if (st == MMCKPT_ERR_PANIC || (st != MMCKPT_OK && ckpt != NULL) ||
      (st == MMCKPT_OK && ckpt == NULL)) {
    fprintf(stderr, "%s: status %u (%s)\n", what, (unsigned)st, mmckpt_last_error());
    test_failures++;
  }
  if (st != MMCKPT_OK) return;
  opened++;
  walk(ckpt, len, what);
  mmckpt_checkpoint_close(ckpt);
}

/* ---- structure of a zip: what the boundary mutations aim at ---- */
#define MAX_ENTRIES 256
typedef struct entry { size_t at, name, name_len, local, data, size; } entry;
typedef struct layout {
  int ok;
  size_t eocd, cd, count;
  entry e[MAX_ENTRIES];
  size_t pkl_start, pkl_end; /* 0, 0 when not found */
} layout;

static layout find_layout(const unsigned char *b, size_t len) {
  layout l;
  size_t i, pos;
  int ok = 1;
  memset(&l, 0, sizeof l);
  if (len < 22) return l;
  for (i = len - 22 + 1; i-- > 0;)
    if (b[i] == 0x50 && b[i + 1] == 0x4b && b[i + 2] == 5 && b[i + 3] == 6) break;
  if (i == (size_t)-1) return l;
  l.eocd = i;
  l.cd = u32_at(b, len, i + 16, &ok);
  l.count = u16_at(b, len, i + 10, &ok);
  if (l.count > MAX_ENTRIES) return l;
  pos = l.cd;
  for (i = 0; i < l.count && ok; i++) {
    entry *e = &l.e[i];
    size_t n, x, c;
    if (pos + 46 > len || memcmp(b + pos, "PK\x01\x02", 4) != 0) return l;
    e->at = pos;
    e->size = u32_at(b, len, pos + 20, &ok);
    n = u16_at(b, len, pos + 28, &ok);
    x = u16_at(b, len, pos + 30, &ok);
    c = u16_at(b, len, pos + 32, &ok);
    e->local = u32_at(b, len, pos + 42, &ok);
    e->data = e->local + 30 + u16_at(b, len, e->local + 26, &ok) + u16_at(b, len, e->local + 28, &ok);
    e->name = pos + 46;
    e->name_len = n;
    if (!l.pkl_end && n >= 8 && pos + 46 + n <= len && memcmp(b + pos + 46 + n - 8, "data.pkl", 8) == 0) {
      l.pkl_start = e->data;
      l.pkl_end = e->data + e->size;
    }
    pos += 46 + n + x + c;
  }
  l.ok = ok && l.pkl_end <= len;
  if (!l.ok) l.pkl_start = l.pkl_end = 0;
  return l;
}

/* Offsets of the opcodes of a pickle (as tests/mutants/mod.rs opcode_offsets). */
static size_t opcode_offsets(const unsigned char *p, size_t len, size_t *out, size_t max) {
  size_t i = 0, n = 0;
  while (i < len && n < max) {
    unsigned char op = p[i];
    size_t arg = 0, k, lenbytes = 0;
    int ok = 1;
    out[n++] = i++;
    switch (op) {
      case '.': return n;
      case 'J': case 'j': case 'r': case 0x84: arg = 4; break;
      case 'K': case 'h': case 'q': case 0x80: case 0x82: arg = 1; break;
      case 'M': case 0x83: arg = 2; break;
      case 'G': case 0x95: arg = 8; break;
      case 'I': case 'L': case 'S': case 'V': case 'F': case 'g': case 'p': case 'P':
      case 'c': case 'i': {
        int lines = (op == 'c' || op == 'i') ? 2 : 1;
        k = i;
        while (lines && k < len) if (p[k++] == '\n') lines--;
        if (lines) return n;
        arg = k - i;
        break;
      }
      case 0x8a: case 'U': case 'C': case 0x8c: lenbytes = 1; break;
      case 0x8b: case 'T': case 'B': case 'X': lenbytes = 4; break;
      case 0x8e: case 0x96: case 0x8d: lenbytes = 8; break;
      default: break;
    }
    if (lenbytes) {
      if (i + lenbytes > len) return n;
      for (k = 0; k < lenbytes; k++) arg |= (size_t)p[i + k] << (8 * k);
      if (arg > len) ok = 0;
      arg += lenbytes;
    }
    if (!ok || arg > len - i) return n;
    i += arg;
  }
  return n;
}

static int cmp_size(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? -1 : x > y;
}

#define MAX_OPS 65536
static size_t ops[MAX_OPS];

static void mutate(const char *file) {
  size_t len = 0, i, j, nops = 0;
  unsigned char *orig = read_file(data_path(file), &len), *buf, *big;
  layout l;
  size_t meta[2 * (MAX_ENTRIES + 2)], nmeta = 0, before = mutants;
  size_t cuts[8 * MAX_ENTRIES + MAX_OPS / 16 + 64], ncuts = 0, all[3 * (8 * MAX_ENTRIES + MAX_OPS / 16 + 64)], nall = 0;
  CHECK(orig != NULL);
  if (!orig) return;
  rng_state = 0x6d6d636b7074ull ^ (uint64_t)len;
  digest = 0xcbf29ce484222325ull;
  buf = (unsigned char *)malloc(len + 1);
  big = (unsigned char *)malloc(2 * len + 1);
  memcpy(buf, orig, len);
  l = find_layout(orig, len);
  if (l.ok) {
    meta[nmeta++] = l.cd; meta[nmeta++] = len;
    for (i = 0; i < l.count; i++) { meta[nmeta++] = l.e[i].local; meta[nmeta++] = l.e[i].data; }
    if (l.pkl_end) { meta[nmeta++] = l.pkl_start; meta[nmeta++] = l.pkl_end; }
    if (l.pkl_end) nops = opcode_offsets(orig + l.pkl_start, l.pkl_end - l.pkl_start, ops, MAX_OPS);
  }

  /* 1. bit flips */
  for (i = 0; i < scaled(1000); i++) {
    size_t at, bit;
    if (i % 2 == 0 || nmeta == 0) {
      at = rng_below(len);
    } else {
      size_t k = rng_below(nmeta / 2), a = meta[2 * k], b = meta[2 * k + 1];
      at = a + rng_below(b > a ? b - a : 0);
    }
    bit = rng_below(8);
    if (at < len) {
      buf[at] ^= (unsigned char)(1u << bit);
      try_mutant(buf, len, file, "bit flip");
      buf[at] ^= (unsigned char)(1u << bit);
    }
  }

  /* 2. truncations at every boundary and one byte either side */
  cuts[ncuts++] = 0; cuts[ncuts++] = 1; cuts[ncuts++] = 4; cuts[ncuts++] = 22;
  cuts[ncuts++] = len ? len - 1 : 0;
  if (l.ok) {
    cuts[ncuts++] = l.eocd; cuts[ncuts++] = l.eocd + 22; cuts[ncuts++] = l.cd;
    for (i = 0; i < l.count; i++) {
      const entry *e = &l.e[i];
      cuts[ncuts++] = e->at; cuts[ncuts++] = e->at + 46; cuts[ncuts++] = e->local;
      cuts[ncuts++] = e->local + 30; cuts[ncuts++] = e->data; cuts[ncuts++] = e->data + e->size;
    }
    if (l.pkl_end) {
      size_t stride = nops / scaled(200);
      cuts[ncuts++] = l.pkl_start; cuts[ncuts++] = l.pkl_end;
      if (stride == 0) stride = 1;
      for (i = 0; i < nops && ncuts < sizeof cuts / sizeof cuts[0] - 2; i += stride)
        cuts[ncuts++] = l.pkl_start + ops[i];
    }
    cuts[ncuts++] = l.eocd >= 20 ? l.eocd - 20 : 0;
    cuts[ncuts++] = l.eocd >= 76 ? l.eocd - 76 : 0;
  }
  for (i = 0; i < ncuts; i++) {
    size_t c = cuts[i];
    if (c > 0 && c - 1 < len) all[nall++] = c - 1;
    if (c == 0) all[nall++] = 0;
    if (c < len) all[nall++] = c;
    if (c + 1 < len) all[nall++] = c + 1;
  }
  qsort(all, nall, sizeof all[0], cmp_size);
  for (i = 0; i < nall; i++)
    if (i == 0 || all[i] != all[i - 1]) try_mutant(orig, all[i], file, "truncation");

  /* 3. byte-range duplications: copied over, or inserted */
  for (i = 0; i < scaled(300); i++) {
    size_t n = 1 + rng_below(len < 64 ? len : 64), from = rng_below(len - n + 1), to = rng_below(len);
    if (i % 2 == 0) {
      size_t end = to + n < len ? to + n : len;
      memcpy(big, orig, len);
      memcpy(big + to, orig + from, end - to);
      try_mutant(big, len, file, "duplication");
    } else {
      memcpy(big, orig, to);
      memcpy(big + to, orig + from, n);
      memcpy(big + to + n, orig + to, len - to);
      try_mutant(big, len + n, file, "duplication");
    }
  }

  if (l.ok) {
    /* 4. zip entry substitutions: swapped local header offsets; swapped equal-length names */
    for (i = 0; i < l.count; i++)
      for (j = i + 1; j < l.count; j++) {
        unsigned char tmp[65536];
        const entry *a = &l.e[i], *b = &l.e[j];
        memcpy(big, orig, len);
        memcpy(tmp, big + a->at + 42, 4);
        memcpy(big + a->at + 42, big + b->at + 42, 4);
        memcpy(big + b->at + 42, tmp, 4);
        try_mutant(big, len, file, "swapped offsets");
        if (a->name_len == b->name_len) {
          memcpy(big, orig, len);
          memcpy(tmp, orig + a->name, a->name_len);
          memcpy(big + a->name, orig + b->name, b->name_len);
          memcpy(big + b->name, tmp, a->name_len);
          try_mutant(big, len, file, "swapped names");
        }
      }
    /* 5. pickle opcode substitutions: opcodes at evenly spread positions, each replaced by
       every other opcode */
    if (nops) {
      size_t positions = scaled(48) < nops ? scaled(48) : nops;
      for (i = 0; i < positions; i++) {
        size_t at = l.pkl_start + ops[i * nops / positions], k;
        for (k = 0; k < sizeof opcodes - 1; k++) {
          if (opcodes[k] == orig[at]) continue;
          buf[at] = opcodes[k];
          try_mutant(buf, len, file, "opcode substitution");
        }
        buf[at] = orig[at];
      }
    }
  }
  fprintf(stderr, "%s: %zu mutants\n", file, mutants - before);
  check_digest(file, mutants - before);
  free(big);
  free(buf);
  free(orig);
}

int main(int argc, char **argv) {
  /* /dev/shm when there is one: tens of thousands of small writes stay in memory. */
  char shm_dir[] = "/dev/shm/mmckpt-mutation-XXXXXX", tmp_dir[] = "/tmp/mmckpt-mutation-XXXXXX";
  char *dir;
  size_t i;
  test_init(argc, argv);
  if (getenv("MMCKPT_TEST_SKIP_LARGE")) scale = 0.1;
  if (getenv("MMCKPT_MUTANTS_PER_CLASS")) scale = atof(getenv("MMCKPT_MUTANTS_PER_CLASS"));
  dir = mkdtemp(shm_dir);
  if (!dir) dir = mkdtemp(tmp_dir);
  if (!dir) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(tmp_path, sizeof tmp_path, "%s/mutant.pt", dir);
  for (i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) mutate(fixtures[i]);
  fprintf(stderr, "%zu modules copy-loaded from mutants\n", modules_loaded);
  fprintf(stderr, "%zu mutants, %zu opened and walked, %zu tensors read (byte sum %llu)\n",
          mutants, opened, tensors_read, byte_sum);
  CHECK(mutants >= (scale >= 1.0 ? 10000u : 1000u));
  remove(tmp_path);
  rmdir(dir);
  return test_finish("test_mutation");
}
