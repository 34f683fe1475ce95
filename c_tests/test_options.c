/* Versioned options: a caller compiled against version 1 of mmckpt_open_options and
   mmckpt_load_options passes structs of exactly the version-1 layout, placed so that the byte
   after each is an inaccessible page: if the library read or wrote one byte past version 1's
   fields, the test would die with SIGSEGV. Unknown versions are refused naming both versions,
   and the static initialisers equal the init functions. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "support.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* The version-1 layouts, spelled out as an old header declared them. */
typedef struct v1_open_options {
  uint32_t version;
  uint32_t flags;
  const char *root;
} v1_open_options;

typedef struct v1_load_options {
  uint32_t version;
  uint32_t flags;
  const char *prefix;
  int32_t (*on_tensor)(void *user_data, const mmckpt_tensor *entry);
  void *user_data;
} v1_load_options;

/* Two pages: the first readable and writable, the second inaccessible. Returns a pointer to
   the last `size` bytes of the first page. */
static void *before_guard_page(size_t size, void **map, size_t *map_len) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  unsigned char *base = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    perror("mmap");
    exit(2);
  }
  if (mprotect(base + page, page, PROT_NONE) != 0) {
    perror("mprotect");
    exit(2);
  }
  *map = base;
  *map_len = 2 * page;
  return base + page - size;
}

static int32_t count_entries(void *user_data, const mmckpt_tensor *entry) {
  (void)entry;
  (*(int *)user_data)++;
  return 0;
}

static void v1_structs_are_read_and_written_within_their_size(void) {
  void *map1, *map2;
  size_t len1, len2;
  v1_open_options *open_v1 = before_guard_page(sizeof(v1_open_options), &map1, &len1);
  v1_load_options *load_v1 = before_guard_page(sizeof(v1_load_options), &map2, &len2);
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_module *m = NULL;
  mmckpt_load_report *report = NULL;
  int calls = 0;

  memset(open_v1, 0xAB, sizeof *open_v1);
  CHECK_OK(mmckpt_open_options_init((mmckpt_open_options *)(void *)open_v1, 1));
  CHECK(open_v1->version == 1 && open_v1->flags == 0 && open_v1->root == NULL);
  open_v1->flags = MMCKPT_OPEN_READ;
  open_v1->root = NULL;
  CHECK_OK(mmckpt_checkpoint_open(data_path("fixtures/proto4.pt"),
                                  (const mmckpt_open_options *)(const void *)open_v1, &ckpt));
  if (!ckpt) return;
  CHECK_OK(mmckpt_module_from_checkpoint(ckpt, &m));

  memset(load_v1, 0xAB, sizeof *load_v1);
  CHECK_OK(mmckpt_load_options_init((mmckpt_load_options *)(void *)load_v1, 1));
  CHECK(load_v1->version == 1 && load_v1->flags == MMCKPT_LOAD_STRICT && load_v1->prefix == NULL &&
        load_v1->on_tensor == NULL && load_v1->user_data == NULL);
  load_v1->flags |= MMCKPT_LOAD_ASSIGN;
  load_v1->on_tensor = count_entries;
  load_v1->user_data = &calls;
  CHECK_OK(mmckpt_module_load(m, ckpt, (const mmckpt_load_options *)(const void *)load_v1, &report));
  CHECK(calls == (int)mmckpt_checkpoint_tensor_count(ckpt) && calls > 0);
  CHECK(mmckpt_load_report_missing_count(report) == 0);

  mmckpt_load_report_free(report);
  mmckpt_module_free(m);
  mmckpt_checkpoint_close(ckpt);
  munmap(map1, len1);
  munmap(map2, len2);
}

static void unknown_versions_are_refused_naming_both(void) {
  mmckpt_open_options o;
  mmckpt_load_options l;
  mmckpt_checkpoint *ckpt = NULL;
  char newer[16];
  snprintf(newer, sizeof newer, "%u", (unsigned)MMCKPT_OPEN_OPTIONS_VERSION + 1);

  memset(&o, 0xAB, sizeof o);
  CHECK_STATUS(mmckpt_open_options_init(&o, 0), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("is 0");
  CHECK(o.version == 0xABABABABu); /* not written */
  CHECK_STATUS(mmckpt_open_options_init(&o, MMCKPT_OPEN_OPTIONS_VERSION + 1), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS(newer);
  CHECK_ERROR_MENTIONS("versions 1 to 1");
  CHECK_STATUS(mmckpt_open_options_init(NULL, MMCKPT_OPEN_OPTIONS_VERSION), MMCKPT_ERR_NULL_ARGUMENT);

  CHECK_OK(mmckpt_open_options_init(&o, MMCKPT_OPEN_OPTIONS_VERSION));
  o.version = MMCKPT_OPEN_OPTIONS_VERSION + 1;
  CHECK_STATUS(mmckpt_checkpoint_open(data_path("fixtures/proto4.pt"), &o, &ckpt), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("mmckpt_open_options");
  CHECK_ERROR_MENTIONS(newer);
  CHECK(ckpt == NULL);

  memset(&l, 0xAB, sizeof l);
  CHECK_STATUS(mmckpt_load_options_init(&l, 99), MMCKPT_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("99");
  CHECK_ERROR_MENTIONS("mmckpt_load_options");
  CHECK(l.version == 0xABABABABu);
}

static void static_initialisers_equal_init(void) {
  mmckpt_open_options a = MMCKPT_OPEN_OPTIONS_INIT, b;
  mmckpt_load_options c = MMCKPT_LOAD_OPTIONS_INIT, d;
  CHECK_OK(mmckpt_open_options_init(&b, MMCKPT_OPEN_OPTIONS_VERSION));
  CHECK(a.version == b.version && a.flags == b.flags && a.root == b.root);
  CHECK_OK(mmckpt_load_options_init(&d, MMCKPT_LOAD_OPTIONS_VERSION));
  CHECK(c.version == d.version && c.flags == d.flags && c.prefix == d.prefix &&
        c.on_tensor == d.on_tensor && c.user_data == d.user_data && c.tp_rank == d.tp_rank &&
        c.tp_world == d.tp_world && c.split_rules == d.split_rules &&
        c.split_rule_count == d.split_rule_count);
}

int main(int argc, char **argv) {
  test_init(argc, argv);
  v1_structs_are_read_and_written_within_their_size();
  unknown_versions_are_refused_naming_both();
  static_initialisers_equal_init();
  return test_finish("test_options");
}
