"""The Debian package: `make deb` builds build/camskeyd_VERSION_ARCH.deb with
dpkg-buildpackage from debian/, lintian finds no error, and the package holds
what docs/OPERATIONS.md says (binary in /usr/sbin, units, conffile, man
pages) with dependencies from the shared libraries. It is built and
inspected with dpkg-deb, never installed here.

`make check` installs the packaging tools (PACKAGING_PKGS in the Makefile):
the build takes about 15 s. Without dpkg-buildpackage (a `make unit` run on
a machine without them) the tests are skipped and say why."""
import os
import re
import shutil
import subprocess

import camtest
from camtest import ROOT

DEB = {}


def makefile_version():
    with open(os.path.join(ROOT, "Makefile")) as f:
        m = re.search(r"^VERSION\s*:=\s*(\S+)", f.read(), re.M)
    assert m, "no VERSION in the Makefile"
    return m.group(1)


def build():
    """Build once for every test; returns (path, make's output)."""
    if "path" in DEB:
        return DEB["path"], DEB["out"]
    for tool in ("dpkg-buildpackage", "dh", "lintian", "fakeroot"):
        if not shutil.which(tool):
            camtest.skip("%s is not installed (make deps installs it)" % tool)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    path = os.path.join(ROOT, "build", "camskeyd_%s_%s.deb" % (makefile_version(), arch))
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "deb"],
                       capture_output=True, text=True, timeout=280)
    out = r.stdout + r.stderr
    assert r.returncode == 0, "make deb failed:\n" + out
    assert os.path.isfile(path), "no %s after make deb:\n%s" % (path, out)
    DEB["path"], DEB["out"] = path, out
    return path, out


def contents(path):
    out = subprocess.run(["dpkg-deb", "-c", path], capture_output=True, text=True,
                         check=True).stdout
    return {line.split(None, 5)[5].split(" -> ")[0].lstrip("."): line.split()[0]
            for line in out.splitlines()}


def field(path, name):
    return subprocess.run(["dpkg-deb", "-f", path, name], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_make_deb_builds_the_package_and_lintian_finds_no_error():
    path, out = build()
    assert "lintian: no errors" in out, out
    assert not re.search(r"^E: ", out, re.M), out
    # Nothing written next to the repository: dpkg-buildpackage ran in build/deb/.
    parent = os.path.dirname(ROOT)
    assert not [f for f in os.listdir(parent) if f.startswith("camskeyd_")], os.listdir(parent)


def test_package_holds_binary_units_conffile_and_man_pages():
    path, _ = build()
    files = contents(path)
    for want, mode in (("/usr/sbin/camskeyd", "-rwxr-xr-x"),
                       ("/lib/systemd/system/camskeyd.service", "-rw-r--r--"),
                       ("/lib/systemd/system/camskeyd.socket", "-rw-r--r--"),
                       ("/etc/camskeyd/camskeyd.conf", "-rw-r--r--"),
                       ("/usr/share/man/man8/camskeyd.8.gz", "-rw-r--r--"),
                       ("/usr/share/man/man5/camskeyd.conf.5.gz", "-rw-r--r--"),
                       ("/usr/share/doc/camskeyd/copyright", "-rw-r--r--"),
                       ("/usr/share/doc/camskeyd/changelog.gz", "-rw-r--r--")):
        assert files.get(want) == mode, "%s: %r in\n%s" % (want, files.get(want),
                                                           "\n".join(sorted(files)))
    assert not any(f.startswith("/usr/local") for f in files), sorted(files)
    conffiles = subprocess.run(["sh", "-c", "dpkg-deb --ctrl-tarfile '%s' | tar -xOf - ./conffiles"
                                % path], capture_output=True, text=True, check=True).stdout
    assert conffiles.split() == ["/etc/camskeyd/camskeyd.conf"], conffiles


def test_unit_in_the_package_starts_the_packaged_binary():
    path, _ = build()
    unit = subprocess.run(["sh", "-c", "dpkg-deb --fsys-tarfile '%s' | "
                           "tar -xOf - ./lib/systemd/system/camskeyd.service" % path],
                          capture_output=True, text=True, check=True).stdout
    assert "ExecStart=/usr/sbin/camskeyd --config /etc/camskeyd/camskeyd.conf" in unit, unit


def test_control_fields_name_version_and_library_dependencies():
    path, _ = build()
    assert field(path, "Package") == "camskeyd"
    assert field(path, "Version") == makefile_version()
    depends = field(path, "Depends")
    for lib in ("libc6", "libmicrohttpd12", "libcurl4", "libssl3", "libcjson1", "libsqlite3-0"):
        assert re.search(r"\b%s\b" % re.escape(lib), depends), depends
    # Installed but not enabled or started: the AccessKey must come first.
    postinst = subprocess.run(["sh", "-c", "dpkg-deb --ctrl-tarfile '%s' | tar -xOf - ./postinst"
                               % path], capture_output=True, text=True, check=True).stdout
    assert "deb-systemd-invoke start" not in postinst, postinst


def test_make_install_unit_follows_prefix():
    stage = camtest.tmpdir()
    # The build directory follows the flavour make was run with (SANITIZE in
    # MAKEFLAGS), not the harness's BUILD, so the two never mix.
    env = {k: v for k, v in os.environ.items() if k != "BUILD"}
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "install", "PREFIX=/opt/ck",
                        "DESTDIR=" + stage], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.access(os.path.join(stage, "opt/ck/sbin/camskeyd"), os.X_OK)
    with open(os.path.join(stage, "lib/systemd/system/camskeyd.service")) as f:
        unit = f.read()
    assert "ExecStart=/opt/ck/sbin/camskeyd --config /etc/camskeyd/camskeyd.conf" in unit, unit
    assert os.path.isfile(os.path.join(stage, "lib/systemd/system/camskeyd.socket"))


camtest.main(globals())
