# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The release artifact: a wheelhouse packed once on the controller, unpacked and verified on each host.

The artifact is one uncompressed tar of the wheelhouse's distributions and a ``SHA256SUMS`` manifest in
``sha256sum`` format. It is reproducible (sorted members, fixed owner, mode and time), so the same wheels
always give the same file and a host that already holds it is sent nothing. Its name carries the manifest's
digest: ``wheelhouse-<16 hex>.tar``.

Unpacking trusts nothing in the archive: only regular files with plain distribution names, each listed in the
manifest with its digest, are written, into a new directory that replaces the old one by rename.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile

MANIFEST = "SHA256SUMS"
SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
ARTIFACT_RE = re.compile(r"\Awheelhouse-[0-9a-f]{16}\.tar\Z")
# What pip reads from --find-links: wheels and source archives, with plain names (no path, no leading dot).
DISTRIBUTION_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]*\.(?:whl|tar\.gz|zip)\Z")
WHEEL_RE = re.compile(
    r"\A(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?"
    r"-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl\Z"
)
MANIFEST_LINE_RE = re.compile(r"\A(?P<digest>[0-9a-f]{64}) [ *](?P<name>[^/\x00\n]+)\Z")
MANYLINUX_RE = re.compile(r"\Amanylinux_(?P<major>\d+)_(?P<minor>\d+)_(?P<arch>.+)\Z")
# The legacy manylinux names and the glibc each one needs.
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
CHUNK = 1 << 20


class ArtifactError(Exception):
    """The artifact, the wheelhouse or the destination is not what it must be; the message says why."""


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_text(digests):
    """``sha256sum`` lines for a {name: digest} map, sorted by name."""
    return "".join("%s  %s\n" % (digests[name], name) for name in sorted(digests))


def parse_manifest(text):
    """{name: digest} from ``SHA256SUMS`` text; raises ArtifactError on a line it does not accept."""
    digests = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = MANIFEST_LINE_RE.match(line)
        if not match or not DISTRIBUTION_RE.match(match.group("name")):
            raise ArtifactError("%s line %d is not '<sha256>  <distribution file>'" % (MANIFEST, number))
        if match.group("name") in digests:
            raise ArtifactError("%s names %s twice" % (MANIFEST, match.group("name")))
        digests[match.group("name")] = match.group("digest")
    if not digests:
        raise ArtifactError("%s lists no distribution" % MANIFEST)
    return digests


def artifact_name(manifest):
    return "wheelhouse-%s.tar" % hashlib.sha256(manifest.encode("utf-8")).hexdigest()[:16]


def wheelhouse_files(src):
    """(distribution names, skipped names) at the top of a wheelhouse directory, which is what pip reads."""
    if not os.path.isdir(src):
        raise ArtifactError("the wheelhouse %s is not a directory" % src)
    names, skipped = [], []
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if DISTRIBUTION_RE.match(name) and os.path.isfile(path):
            names.append(name)
        else:
            skipped.append(name)
    if not names:
        raise ArtifactError("the wheelhouse %s holds no wheel (*.whl) or source archive at its top" % src)
    return names, skipped


def _member(name, size):
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build(src, cache_dir):
    """Pack the wheelhouse at ``src`` into ``cache_dir``; returns the artifact's description.

    The file is written once per content (its name is its manifest's digest) through a temporary file and a
    rename, so runs for several hosts at once agree on it.
    """
    names, skipped = wheelhouse_files(src)
    digests = dict((name, sha256_file(os.path.join(src, name))) for name in names)
    manifest = manifest_text(digests)
    name = artifact_name(manifest)
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    path = os.path.join(cache_dir, name)
    changed = False
    if not (os.path.isfile(path) and _tar_manifest(path) == manifest):
        fd, tmp = tempfile.mkstemp(prefix=".%s." % name, dir=cache_dir)
        try:
            # POSIX pax: a wheel's name can exceed ustar's 100 characters (several manylinux tags), and pax
            # records it in an extended header; shorter names give the same bytes as ustar.
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                data = manifest.encode("utf-8")
                tar.addfile(_member(MANIFEST, len(data)), io.BytesIO(data))
                for dist in names:
                    with open(os.path.join(src, dist), "rb") as handle:
                        tar.addfile(_member(dist, os.fstat(handle.fileno()).st_size), handle)
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        changed = True
    return dict(
        changed=changed,
        path=path,
        name=name,
        sha256=sha256_file(path),
        manifest=manifest,
        distributions=names,
        skipped=skipped,
    )


def _tar_manifest(path):
    try:
        with tarfile.open(path, mode="r:") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST or not member.isfile():
                return None
            return tar.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, OSError, UnicodeDecodeError):
        return None


# Which wheels a host's interpreter can install: the subset of pip's tag rules a wheelhouse meets in practice
# (pure wheels, CPython's own and stable ABI, manylinux and plain linux platforms).
def wheel_fits(filename, host):
    """Whether a wheel's tags fit ``host``: {implementation, major, minor, machine, glibc: (major, minor) or None}.

    Source archives fit everywhere (pip builds them on the host).
    """
    match = WHEEL_RE.match(filename)
    if not match:
        return filename.endswith((".tar.gz", ".zip"))
    return any(
        _python_fits(py, abi, host) for py in match.group("py").split(".") for abi in match.group("abi").split(".")
    ) and any(_platform_fits(plat, host) for plat in match.group("plat").split("."))


def _version(tag, prefix):
    digits = tag[len(prefix) :]
    if not digits.isdigit():
        return None
    return (int(digits[0]), int(digits[1:]) if len(digits) > 1 else None)


def _python_fits(py, abi, host):
    current = (host["major"], host["minor"])
    cpython = host["implementation"] == "cpython"
    if py.startswith("py"):
        version = _version(py, "py")
        if version is None or version[0] != host["major"] or abi != "none":
            return False
        return version[1] is None or version[1] <= host["minor"]
    if py.startswith("cp") and cpython:
        version = _version(py, "cp")
        if version is None or version[1] is None:
            return False
        if abi == "abi3":
            return version[0] == host["major"] and version[1] <= host["minor"]
        if abi == "none":
            return version == current
        return version == current and abi in ("cp%d%d" % current, "cp%d%dm" % current)
    return False


def _platform_fits(plat, host):
    if plat == "any":
        return True
    machine = host["machine"]
    if plat == "linux_" + machine:
        return True
    glibc = host.get("glibc")
    if glibc is None:
        return False
    for legacy, needs in LEGACY_MANYLINUX.items():
        if plat == "%s_%s" % (legacy, machine):
            return tuple(glibc) >= needs
    match = MANYLINUX_RE.match(plat)
    if match and match.group("arch") == machine:
        return tuple(glibc) >= (int(match.group("major")), int(match.group("minor")))
    return False


def project_of(filename):
    """The normalised project name of a distribution file (PEP 503), for grouping its wheels."""
    match = WHEEL_RE.match(filename)
    base = match.group("name") if match else re.sub(r"-[^-]*\.(?:tar\.gz|zip)\Z", "", filename)
    return re.sub(r"[-_.]+", "-", base).lower()


def unfit_projects(filenames, host):
    """Projects of the wheelhouse of which no file fits ``host``, sorted: pip could not install them there."""
    fits = {}
    for filename in filenames:
        project = project_of(filename)
        fits[project] = fits.get(project, False) or wheel_fits(filename, host)
    return sorted(project for project, fit in fits.items() if not fit)


def describe_host(host):
    libc = "glibc %d.%d" % tuple(host["glibc"]) if host.get("glibc") else "no glibc"
    return "%s %d.%d on %s, %s" % (host["implementation"], host["major"], host["minor"], host["machine"], libc)


# Reading an artifact on a host. Members are streamed, never held in memory: a wheelhouse can be large.
def inspect_artifact(path, expected_sha256):
    """(manifest text, {name: digest}) of an artifact whose sha256 is the expected one and whose members are
    exactly its manifest's distribution files, as regular files; raises ArtifactError naming what is wrong.
    The members' contents are checked as they are unpacked (replace_directory)."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ArtifactError(
            "the artifact %s has sha256 %s, not the %s the controller packed: the copy is damaged or was replaced"
            % (path, actual, expected_sha256)
        )
    names = []
    manifest = None
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                raise ArtifactError("the artifact %s holds %s, which is not a regular file" % (path, member.name))
            if member.name != MANIFEST and not DISTRIBUTION_RE.match(member.name):
                raise ArtifactError("the artifact %s holds %r, which is not a distribution file" % (path, member.name))
            if member.name in names:
                raise ArtifactError("the artifact %s holds %s twice" % (path, member.name))
            names.append(member.name)
            if member.name == MANIFEST:
                manifest = tar.extractfile(member).read(CHUNK).decode("utf-8")
    if manifest is None:
        raise ArtifactError("the artifact %s has no %s" % (path, MANIFEST))
    digests = parse_manifest(manifest)
    problems = check_names(digests, set(names) - {MANIFEST})
    if problems:
        raise ArtifactError("the artifact %s does not match its %s: %s" % (path, MANIFEST, "; ".join(problems)))
    return manifest, digests


def check_names(digests, names):
    """What differs between a manifest's names and the files beside it, as sentences; [] when nothing."""
    problems = []
    for name in sorted(set(digests) | set(names)):
        if name not in names:
            problems.append("%s is missing" % name)
        elif name not in digests:
            problems.append("%s is not in the manifest" % name)
    return problems


def unpacked_matches(dest, manifest):
    """Whether ``dest`` already holds exactly this manifest and its files, with their digests."""
    if os.path.islink(dest) or not os.path.isdir(dest):
        return False
    digests = parse_manifest(manifest)
    if set(os.listdir(dest)) != set(digests) | {MANIFEST}:
        return False
    try:
        with open(os.path.join(dest, MANIFEST), "rb") as handle:
            if handle.read().decode("utf-8") != manifest:
                return False
    except (OSError, UnicodeDecodeError):
        return False
    for name, digest in digests.items():
        path = os.path.join(dest, name)
        if os.path.islink(path) or not os.path.isfile(path) or sha256_file(path) != digest:
            return False
    return True


def _write_member(tar, member, target):
    """Stream one member into a new file; its sha256."""
    digest = hashlib.sha256()
    source = tar.extractfile(member)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        for block in iter(lambda: source.read(CHUNK), b""):
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def replace_directory(dest, path, digests, mode=0o755):
    """Unpack the artifact at ``path`` into a new directory beside ``dest`` and rename it into place.

    Each member is checked against ``digests`` as it is written; on any difference the new directory is removed
    and ``dest`` is left as it was. A link at ``dest`` is refused rather than followed; the old directory is
    removed after the swap.
    """
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    if os.path.islink(dest):
        raise ArtifactError("%s is a symbolic link: remove it, the wheelhouse is a directory the role owns" % dest)
    staging = tempfile.mkdtemp(prefix=".wheelhouse.", dir=parent)
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                # inspect_artifact vetted them; checked again, since a name here becomes a path
                if not member.isfile() or not (member.name == MANIFEST or DISTRIBUTION_RE.match(member.name)):
                    raise ArtifactError(
                        "the artifact %s holds %r, which is not a distribution file" % (path, member.name)
                    )
                written = _write_member(tar, member, os.path.join(staging, member.name))
                if member.name != MANIFEST and written != digests.get(member.name):
                    raise ArtifactError("%s in the artifact has another sha256 than its manifest says" % member.name)
        os.chmod(staging, mode)
        retired = None
        if os.path.lexists(dest):
            retired = tempfile.mkdtemp(prefix=".wheelhouse-old.", dir=parent)
            os.rename(dest, os.path.join(retired, "wheelhouse"))
        try:
            os.rename(staging, dest)
        except OSError:
            if retired:
                os.rename(os.path.join(retired, "wheelhouse"), dest)
                shutil.rmtree(retired, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if retired:
        shutil.rmtree(retired, ignore_errors=True)
