/* Files that change under you (LIMITS.md): a checkpoint truncated by another process while it
   is open. Opened with MMCKPT_OPEN_READ, every tensor stays readable with its old values.
   Mapped (the default), touching its bytes afterwards faults (SIGBUS): checked in a child
   process, which must not exit normally. The mapped case is skipped under valgrind
   (MMCKPT_TEST_SKIP_LARGE), where the child's fault would end up in the memcheck log. */
#include "support.h"

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned long long checksum(mmckpt_checkpoint *ckpt) {
  unsigned long long sum = 0;
  size_t i, n = mmckpt_checkpoint_tensor_count(ckpt);
  for (i = 0; i < n; i++) {
    mmckpt_tensor t;
    uint64_t k;
    if (mmckpt_checkpoint_tensor_at(ckpt, i, &t) != MMCKPT_OK) continue;
    for (k = 0; k < t.nbytes; k++) sum = sum * 31 + ((const volatile unsigned char *)t.data)[k];
  }
  return sum;
}

static int write_copy(const char *path, const unsigned char *bytes, size_t len) {
  FILE *f = fopen(path, "wb");
  int ok = f && fwrite(bytes, 1, len, f) == len;
  if (f) ok = (fclose(f) == 0) && ok;
  return ok;
}

int main(int argc, char **argv) {
  char dir[] = "/tmp/mmckpt-truncate-XXXXXX", path[300];
  size_t len = 0;
  unsigned char *bytes;
  unsigned long long expected;
  mmckpt_checkpoint *ckpt = NULL;
  mmckpt_open_options opts;
  test_init(argc, argv);
  bytes = read_file(data_path("fixtures/align4096.pt"), &len);
  CHECK(bytes != NULL && mkdtemp(dir) != NULL);
  if (!bytes) return test_finish("test_truncate");
  snprintf(path, sizeof path, "%s/model.pt", dir);

  /* READ mode: immune. */
  CHECK(write_copy(path, bytes, len));
  CHECK_OK(mmckpt_checkpoint_open(path, NULL, &ckpt));
  expected = checksum(ckpt);
  mmckpt_checkpoint_close(ckpt);
  ckpt = NULL;
  mmckpt_open_options_init(&opts, MMCKPT_OPEN_OPTIONS_VERSION);
  opts.flags = MMCKPT_OPEN_READ;
  CHECK_OK(mmckpt_checkpoint_open(path, &opts, &ckpt));
  CHECK(truncate(path, 0) == 0);
  CHECK(checksum(ckpt) == expected);
  mmckpt_checkpoint_close(ckpt);

  /* Mapped: the documented hazard. */
  if (!getenv("MMCKPT_TEST_SKIP_LARGE")) {
    pid_t child;
    int status = 0;
    CHECK(write_copy(path, bytes, len));
    fflush(NULL);
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
      mmckpt_checkpoint *mapped = NULL;
      if (mmckpt_checkpoint_open(path, NULL, &mapped) != MMCKPT_OK) _exit(3);
      if (truncate(path, 0) != 0) _exit(4);
      fprintf(stderr, "test_truncate: the child now reads a truncated mapping; a SIGBUS report "
                      "below is expected\n");
      checksum(mapped);
      _exit(0); /* reached only if the truncation went unnoticed */
    }
    CHECK(waitpid(child, &status, 0) == child);
    /* Killed by SIGBUS, or (under ASan, which catches SIGBUS) exited with an error. */
    CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) ||
          (WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3 &&
           WEXITSTATUS(status) != 4));
  }
  remove(path);
  rmdir(dir);
  free(bytes);
  return test_finish("test_truncate");
}
