#!/bin/sh
# mk8s test stand-in for RKE2's install.sh (tar method, air-gap artifacts only).
# Mirrors the real script's tar-mode behaviour: needs root; reads
# sha256sum-ARCH.txt and rke2.linux-ARCH.tar.gz from INSTALL_RKE2_ARTIFACT_PATH;
# installs the main airgap image tarball (rke2-images.linux-ARCH.tar.zst/.tar.gz)
# only when present and listed in the checksum file (checked), and then copies
# every other rke2-images-*.linux-ARCH* file there unchecked; verifies the rke2
# tarball's sha256; unpacks it into INSTALL_RKE2_TAR_PREFIX (default /usr/local,
# /opt/rke2 when /usr/local is a mount point or read-only); runs
# `systemctl daemon-reload`; starts nothing.  INSTALL_RKE2_TYPE has no effect.
# @@INSTALL_TAG@@
set -e

if [ "${DEBUG}" = 1 ]; then
    set -x
fi

info() { echo "[INFO] " "$@"; }
warn() { echo "[WARN] " "$@" >&2; }
fatal() { echo "[ERROR] " "$@" >&2; exit 1; }

# upstream: rancher/rke2 install.sh (setup_env: root; TAR_PREFIX, /opt/rke2 fallback; AGENT_IMAGES_DIR) [CONTRACT IN1 IN9 IN10]
setup_env() {
    DEFAULT_TAR_PREFIX="/usr/local"
    if [ "$(id -u)" -ne 0 ]; then
        fatal "You need to be root to perform this install"
    fi
    INSTALL_RKE2_TYPE="${INSTALL_RKE2_TYPE:-${INSTALL_RKE2_EXEC:-server}}"
    if [ -z "${INSTALL_RKE2_TAR_PREFIX}" ]; then
        INSTALL_RKE2_TAR_PREFIX="${DEFAULT_TAR_PREFIX}"
        if mountpoint -q "${INSTALL_RKE2_TAR_PREFIX}" || ! touch "${INSTALL_RKE2_TAR_PREFIX}/.rke2-ro-test" 2>/dev/null; then
            INSTALL_RKE2_TAR_PREFIX="/opt/rke2"
            warn "${DEFAULT_TAR_PREFIX} is read-only or a mount point; installing to ${INSTALL_RKE2_TAR_PREFIX}"
        fi
        rm -f "${DEFAULT_TAR_PREFIX}/.rke2-ro-test"
    fi
    INSTALL_RKE2_AGENT_IMAGES_DIR="${INSTALL_RKE2_AGENT_IMAGES_DIR:-/var/lib/rancher/rke2/agent/images}"
}

# upstream: rancher/rke2 install.sh (check_method_conflict); stricter: tar method only [CONTRACT IN2 IN3]
check_method_conflict() {
    case "${INSTALL_RKE2_METHOD}" in
    yum | rpm | dnf)
        fatal "the mk8s stand-in install.sh supports only the tar method"
        ;;
    esac
    if command -v rpm >/dev/null 2>&1 && rpm -q rke2-common >/dev/null 2>&1; then
        fatal "Cannot perform ${INSTALL_RKE2_METHOD:-tar} install on host with existing RKE2 RPMs - please run rke2-uninstall.sh first"
    fi
}

# upstream: rancher/rke2 install.sh (setup_arch); stricter: no s390x [CONTRACT IN4]
setup_arch() {
    case ${ARCH:=$(uname -m)} in
    x86_64 | amd64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) fatal "unsupported architecture ${ARCH}" ;;
    esac
    SUFFIX=linux-${ARCH}
}

setup_tmp() {
    TMP_DIR=$(mktemp -d -t rke2-install.XXXXXXXXXX)
    TMP_CHECKSUMS=${TMP_DIR}/rke2.checksums
    TMP_TARBALL=${TMP_DIR}/rke2.tarball
    TMP_AIRGAP_TARBALL=${TMP_DIR}/rke2-images.tarball
    cleanup() {
        code=$?
        set +e
        trap - EXIT
        rm -rf "${TMP_DIR}"
        exit $code
    }
    trap cleanup INT EXIT
}

# upstream: rancher/rke2 install.sh (stage_local_checksums, stage_local_*: cp under set -e) [CONTRACT IN6 IN8]
stage_local_checksums() {
    info "staging local checksums from ${INSTALL_RKE2_ARTIFACT_PATH}/sha256sum-${ARCH}.txt"
    cp -f "${INSTALL_RKE2_ARTIFACT_PATH}/sha256sum-${ARCH}.txt" "${TMP_CHECKSUMS}"
    CHECKSUM_EXPECTED=$(grep "rke2.${SUFFIX}.tar.gz" "${TMP_CHECKSUMS}" | awk '{print $1}')
    AIRGAP_CHECKSUM_EXPECTED=
    for fmt in zst gz; do
        if [ -f "${INSTALL_RKE2_ARTIFACT_PATH}/rke2-images.${SUFFIX}.tar.${fmt}" ]; then
            AIRGAP_CHECKSUM_EXPECTED=$(grep "rke2-images.${SUFFIX}.tar.${fmt}" "${TMP_CHECKSUMS}" | awk '{print $1}')
            AIRGAP_TARBALL_FORMAT=${fmt}
            break
        fi
    done
}

stage_local_airgap_tarball() {
    if [ -n "${AIRGAP_TARBALL_FORMAT}" ]; then
        info "staging ${AIRGAP_TARBALL_FORMAT} airgap image tarball from ${INSTALL_RKE2_ARTIFACT_PATH}/rke2-images.${SUFFIX}.tar.${AIRGAP_TARBALL_FORMAT}"
        cp -f "${INSTALL_RKE2_ARTIFACT_PATH}/rke2-images.${SUFFIX}.tar.${AIRGAP_TARBALL_FORMAT}" "${TMP_AIRGAP_TARBALL}"
    fi
}

stage_local_tarball() {
    info "staging tarball from ${INSTALL_RKE2_ARTIFACT_PATH}/rke2.${SUFFIX}.tar.gz"
    cp -f "${INSTALL_RKE2_ARTIFACT_PATH}/rke2.${SUFFIX}.tar.gz" "${TMP_TARBALL}"
}

# upstream: rancher/rke2 install.sh (verify_airgap_tarball, install_airgap_tarball) [CONTRACT IN8]
verify_airgap_tarball() {
    [ -n "${AIRGAP_CHECKSUM_EXPECTED}" ] || return 0
    info "verifying airgap tarball"
    AIRGAP_CHECKSUM_ACTUAL=$(sha256sum "${TMP_AIRGAP_TARBALL}" | awk '{print $1}')
    if [ "${AIRGAP_CHECKSUM_EXPECTED}" != "${AIRGAP_CHECKSUM_ACTUAL}" ]; then
        fatal "download sha256 does not match ${AIRGAP_CHECKSUM_EXPECTED}, got ${AIRGAP_CHECKSUM_ACTUAL}"
    fi
}

install_airgap_tarball() {
    [ -n "${AIRGAP_CHECKSUM_EXPECTED}" ] || return 0
    mkdir -p "${INSTALL_RKE2_AGENT_IMAGES_DIR}"
    if grep -sqF '.tar.zst' "${TMP_CHECKSUMS}" || [ "${AIRGAP_TARBALL_FORMAT}" = "zst" ]; then
        info "installing airgap tarball to ${INSTALL_RKE2_AGENT_IMAGES_DIR}"
        mv -f "${TMP_AIRGAP_TARBALL}" "${INSTALL_RKE2_AGENT_IMAGES_DIR}/rke2-images.${SUFFIX}.tar.zst"
    else
        info "decompressing airgap tarball to ${INSTALL_RKE2_AGENT_IMAGES_DIR}"
        gzip -dc "${TMP_AIRGAP_TARBALL}" >"${INSTALL_RKE2_AGENT_IMAGES_DIR}/rke2-images.${SUFFIX}.tar"
    fi
    # other image groups are copied as they are, without a checksum
    for IMAGE in "${INSTALL_RKE2_ARTIFACT_PATH}"/rke2-images-*."${SUFFIX}"*; do
        if [ -f "${IMAGE}" ]; then
            info "Installing airgap image from ${IMAGE}"
            cp "${IMAGE}" "${INSTALL_RKE2_AGENT_IMAGES_DIR}"
        fi
    done
}

# upstream: rancher/rke2 install.sh (verify_tarball) [CONTRACT IN7]
verify_tarball() {
    info "verifying tarball"
    CHECKSUM_ACTUAL=$(sha256sum "${TMP_TARBALL}" | awk '{print $1}')
    if [ "${CHECKSUM_EXPECTED}" != "${CHECKSUM_ACTUAL}" ]; then
        fatal "download sha256 does not match ${CHECKSUM_EXPECTED}, got ${CHECKSUM_ACTUAL}"
    fi
}

# upstream: rancher/rke2 install.sh (unpack_tarball) [CONTRACT IN9]
unpack_tarball() {
    info "unpacking tarball file to ${INSTALL_RKE2_TAR_PREFIX}"
    mkdir -p "${INSTALL_RKE2_TAR_PREFIX}"
    tar xzf "${TMP_TARBALL}" -C "${INSTALL_RKE2_TAR_PREFIX}"
    if [ "${INSTALL_RKE2_TAR_PREFIX}" != "${DEFAULT_TAR_PREFIX}" ]; then
        info "updating tarball contents to reflect install path"
        sed -i "s|${DEFAULT_TAR_PREFIX}|${INSTALL_RKE2_TAR_PREFIX}|" "${INSTALL_RKE2_TAR_PREFIX}"/lib/systemd/system/rke2-*.service "${INSTALL_RKE2_TAR_PREFIX}/bin/rke2-uninstall.sh"
        info "moving systemd units to /etc/systemd/system"
        mkdir -p /etc/systemd/system
        mv -f "${INSTALL_RKE2_TAR_PREFIX}"/lib/systemd/system/rke2-*.service /etc/systemd/system/
        info "install complete; you may want to run:  export PATH=\$PATH:${INSTALL_RKE2_TAR_PREFIX}/bin"
    fi
}

do_install() {
    setup_env
    check_method_conflict
    setup_arch
    # upstream: rancher/rke2 install.sh (do_install downloads with curl/wget); stricter: air gap only [CONTRACT IN5]
    if [ -z "${INSTALL_RKE2_ARTIFACT_PATH}" ]; then
        fatal "can not find curl or wget for downloading files (the mk8s stand-in installs only from INSTALL_RKE2_ARTIFACT_PATH)"
    fi
    setup_tmp
    stage_local_checksums
    stage_local_airgap_tarball
    stage_local_tarball
    verify_airgap_tarball
    install_airgap_tarball
    verify_tarball
    unpack_tarball
    # upstream: rancher/rke2 install.sh (do_install_tar: INSTALL_RKE2_SKIP_RELOAD) [CONTRACT IN10]
    if [ -z "${INSTALL_RKE2_SKIP_RELOAD}" ]; then
        systemctl daemon-reload
    fi
}

do_install
exit 0
