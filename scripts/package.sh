#!/usr/bin/env bash
# make package: pg_pulse as an operator installs it, in dist/:
#   postgresql-15-pulse_<version>_amd64.deb  the library, control file and SQL scripts for Debian's
#                                            PostgreSQL 15 (depends on postgresql-15)
#   pg_pulse-<version>-pg<major>.tar.gz      for PostgreSQL 16 and 18 when their build is here
#                                            (make test PG=16 fetches it): lib/ and extension/,
#                                            to copy into `pg_config --pkglibdir` and `--sharedir`/extension
set -euo pipefail
cd "$(dirname "$0")/.."
PG_HOME=${PG_HOME:-/opt/pg_pulse-pg}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p dist

# a package tree of `cargo pgrx package` for one PostgreSQL, with the frozen install scripts of
# released versions (sql/pg_pulse--X.Y.Z.sql) next to the upgrade scripts pgrx copies
package() { # pg_config -> prints the tree's root
  local pgc=$1 major
  major=$("$pgc" --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')
  cargo pgrx package --pg-config "$pgc" >&2
  local root="target/release/pg_pulse-pg$major"
  install -m 644 sql/pg_pulse--*.sql "$root$("$pgc" --sharedir)/extension/"
  echo "$root"
}

# Debian package for 15
pgc=/usr/lib/postgresql/15/bin/pg_config
root=$(package "$pgc")
deb=target/deb/postgresql-15-pulse
rm -rf "$deb"; mkdir -p "$deb/DEBIAN"
cp -a "$root/usr" "$deb/"
cat > "$deb/DEBIAN/control" <<CONTROL
Package: postgresql-15-pulse
Version: $VERSION
Architecture: amd64
Maintainer: pg_pulse developers <pg_pulse@localhost>
Depends: postgresql-15, libc6 (>= 2.34), libgcc-s1
Section: database
Priority: optional
Description: pg_pulse: a job scheduler inside PostgreSQL 15
 Cron and sub-minute SQL jobs run in sessions of their owners, outbound HTTP
 jobs and after-commit HTTP requests, work queues on your own tables and
 health reports, run by background workers. Add pg_pulse to
 shared_preload_libraries, restart, then CREATE EXTENSION pg_pulse.
CONTROL
dpkg-deb --build --root-owner-group "$deb" "dist/postgresql-15-pulse_${VERSION}_amd64.deb" >/dev/null
echo "dist/postgresql-15-pulse_${VERSION}_amd64.deb"

# tarballs for the other versions that are here
for major in 16 18; do
  pgc="$PG_HOME/$major/pgserver/pginstall/bin/pg_config"
  [ -x "$pgc" ] || { echo "(PostgreSQL $major is not here: no tarball; make test PG=$major fetches it)"; continue; }
  root=$(package "$pgc")
  tree=target/tar/pg_pulse-$VERSION-pg$major
  rm -rf "$tree"; mkdir -p "$tree/lib" "$tree/extension"
  cp "$root$("$pgc" --pkglibdir)/pg_pulse.so" "$tree/lib/"
  cp "$root$("$pgc" --sharedir)"/extension/pg_pulse* "$tree/extension/"
  cat > "$tree/INSTALL" <<INSTALL
pg_pulse $VERSION for PostgreSQL $major. As the owner of the PostgreSQL installation:
  cp lib/pg_pulse.so "\$(pg_config --pkglibdir)/"
  cp extension/* "\$(pg_config --sharedir)/extension/"
then add pg_pulse to shared_preload_libraries, restart, and CREATE EXTENSION pg_pulse.
INSTALL
  tar -czf "dist/pg_pulse-$VERSION-pg$major.tar.gz" -C target/tar "pg_pulse-$VERSION-pg$major"
  echo "dist/pg_pulse-$VERSION-pg$major.tar.gz"
done
