# Sourced by the consumer scripts: `repo` (this repository) and `work` (the
# folder given as $1, or a new temporary one), refusing a `work` inside the
# repository, where `cargo new` would join the workspace.
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
case "$work/" in
  "$repo"/*) echo "$(basename "$0"): $work is inside the workspace; cargo new would join it" >&2; exit 2;;
esac
