# Sourced by setup.sh and test.sh: install a Debian package when it is missing, apt-get exists and we
# are root (no download at run time: the package registry is the one network the machines reach).
# debian_package PACKAGE PRESENT_PATH TAG WHAT_IS_SKIPPED
debian_package() {
  local package="$1" present="$2" tag="$3" skipped="$4"
  if [ ! -e "$present" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[$tag] installing Debian package $package"
    (apt-get install -y -q "$package" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$package" >/dev/null 2>&1; }) \
      || echo "[$tag] could not install $package; $skipped will be skipped" >&2
  fi
}
