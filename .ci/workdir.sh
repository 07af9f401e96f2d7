# Sourced by the consumer scripts: `repo` (this repository) and `work` (the
# folder given as $1, or a new temporary one), refusing a `work` inside the
# repository, where `cargo new` would join the workspace; and `readme_simple`.
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
case "$work/" in
  "$repo"/*) echo "$(basename "$0"): $work is inside the workspace; cargo new would join it" >&2; exit 2;;
esac

# Prints the README's shortest program: the ```rust block right after
# "`simple` is the shortest complete program".
readme_simple() {
  awk '/`simple` is the shortest complete program/ {found=1; next}
       found && /^```rust$/ {inside=1; next}
       inside && /^```$/ {exit}
       inside {print}' "$repo/README.md"
}

# Prints the first http://HOST:PORT a server wrote to the file $1, waiting up
# to 30 s for it to appear.
wait_addr() {
  local addr=""
  for _ in $(seq 300); do
    addr=$(grep -o 'http://[0-9.:]*' "$1" | head -1 || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  echo "$addr"
}
