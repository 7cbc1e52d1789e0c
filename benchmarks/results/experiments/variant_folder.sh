# Sourced by the prepared_*_s30.sh scripts (on a checkout with git, from the repository root):
# `variant_folder DIR [PATCH]` makes DIR a fresh copy of the tree's kernel files (cuda.py, spark_walk.cu) with PATCH
# (a diff against sparkv/kernels/decode_attn/spark_walk.cu, a/ and b/ prefixed) applied, for benchmarks/folder_ab.py.
variant_folder() {
  rm -rf "$1" && mkdir -p "$1" && cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} "$1"/
  if [[ -n "${2:-}" ]]; then
    (cd "$1" && patch -s --no-backup-if-mismatch -p4 < "$OLDPWD/$2")
  fi
}
