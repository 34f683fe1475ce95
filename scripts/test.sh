#!/usr/bin/env bash
# Runs every test: formatting and lints, Rust unit and integration tests, the C/C++ tests with
# ctest (plain, under ASan+UBSan, and under valgrind memcheck), programs built against an
# installed prefix (c_tests/consumers), and the torch oracle suite.
# Installs missing tools first (scripts/install-deps.sh). Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)

step() { printf '\n==== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
echo "cargo fmt: $(git ls-files '*.rs' | wc -l) Rust files formatted"
step "cargo clippy (the workspace: the library and the CLI)"
cargo clippy --workspace --all-targets --release -- -D warnings
# The library alone, as a project that depends on it builds it (no test-only `fuzzing` feature).
cargo clippy -p mmckpt --lib --release -- -D warnings
echo "cargo clippy: 0 warnings (2 crates, all targets; the library alone)"
step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "cargo doc: 0 warnings (2 crates)"
step "cargo test (the workspace, doc examples included)"
cargo test --workspace --release 2>&1 | tee /tmp/mmckpt-cargo-test.log
# One count for the whole step (cargo prints one "test result" line per test binary).
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8; binaries++ }
     END { printf "cargo test: %d passed, %d failed, %d ignored (%d test binaries)\n",
                  passed, failed, ignored, binaries }' /tmp/mmckpt-cargo-test.log
step "C and C++ tests (ctest)"
cargo build --release # libmmckpt.so and target/release/mmckpt (default-members: both crates)
cmake -S c_tests -B c_tests/build -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build c_tests/build -j "$jobs" >/dev/null
ctest --test-dir c_tests/build --output-on-failure -j "$jobs"
step "C and C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (ctest)"
cmake -S c_tests -B c_tests/build-asan -DCMAKE_BUILD_TYPE=Debug -DMMCKPT_SANITIZE=ON >/dev/null
cmake --build c_tests/build-asan -j "$jobs" >/dev/null
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir c_tests/build-asan --output-on-failure -j "$jobs"
step "C and C++ tests under valgrind memcheck (ctest)"
MMCKPT_TEST_SKIP_LARGE=1 ctest --test-dir c_tests/build --output-on-failure -j "$jobs" \
  --overwrite MemoryCheckCommand="$(command -v valgrind)" \
  --overwrite MemoryCheckCommandOptions="--error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite" \
  -T memcheck >/tmp/mmckpt-memcheck.log 2>&1 || { cat /tmp/mmckpt-memcheck.log; exit 1; }
# valgrind exits 1 on any error or definite leak, which fails that test and ctest: every test
# that passed is clean. Defects ctest summarises (other kinds) are shown, not judged.
tested=$(grep -oE 'tests failed out of [0-9]+' /tmp/mmckpt-memcheck.log | grep -oE '[0-9]+$')
sed -n '/^Memory checking results:/,/^$/p' /tmp/mmckpt-memcheck.log | sed '1d;/^$/d'
echo "valgrind memcheck: ${tested:?no ctest summary in /tmp/mmckpt-memcheck.log} of $tested tests clean (no errors, no definite leaks)"
step "installed library: scripts/install.sh into a temporary prefix, consumers built with pkg-config and find_package"
bash c_tests/consumers/run.sh
step "torch oracle suite (pytest tests/oracle: random checkpoints, torch.load vs mmckpt ls)"
cargo build --release
venv=$(bash scripts/setup-venv.sh)
# Legacy streams are supported now: a skipped legacy case would be a regression.
MMCKPT_ORACLE_REQUIRE_LEGACY=1 "$venv/bin/python" -m pytest tests/oracle -q -rs -p no:cacheprovider
step "Python binding (pip install ./python into the venv, then pytest python/tests)"
"$venv/bin/pip" install --quiet ./python
"$venv/bin/python" -m pytest python/tests -q -p no:cacheprovider
step "benchmarks, tiny sizes (bench/run.py --tiny: checks that every scenario still runs)"
"$venv/bin/python" bench/run.py --tiny --json /tmp/mmckpt-bench-tiny.json
step "all tests passed"
