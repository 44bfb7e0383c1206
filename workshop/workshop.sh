#!/usr/bin/env bash
# The smolkit workshop hub (JupyterHub) on one box, each participant a system account. See workshop/SETUP.md.
# Every command runs as root (sudo): it creates accounts, owns the shared cache and starts servers as others.
#
#   workshop/workshop.sh prepare            the hub's proxy (npm ci), the shared model cache (root's, read-only
#                                              for everybody), and a check that participants can run the venv
#   workshop/workshop.sh users NAME...      a system account per participant (home only they can read, no login
#                                              shell) with a fresh generated password; prints "name password" lines
#                                              and keeps them in $SMOLKIT_WORKSHOP_DIR/hub/passwords.txt (root only)
#   workshop/workshop.sh users --admin NAME...   the same for facilitators (they see and open every server)
#   workshop/workshop.sh start              run the hub in the foreground (Ctrl-C stops it and every server)
#   workshop/workshop.sh remove NAME...     delete those accounts and their homes (only workshop accounts)
#   workshop/workshop.sh remove --all       delete every workshop account, home and both groups
#   workshop/workshop.sh capacity [ARGS]    measure this GPU (or CPU) for a minute or two: how many participants
#                                              it holds within the budgets, the SMOLKIT_HUB_MAX_USERS (and on a GPU
#                                              SMOLKIT_HUB_GPU_CONTEXT_GB) to set
#                                              (bench/capacity.py, through MPS where the hub starts it, see
#                                              SMOLKIT_HUB_MPS; ARGS e.g. --n 8,16,32 --seconds 30)
#
# It touches only what it made: the accounts and the two groups it created are recorded in
# $SMOLKIT_WORKSHOP_DIR/hub/accounts.txt and groups.txt (root only). A group that already exists and is not
# recorded there is refused (never adopted), and an account that is not recorded is never changed or removed,
# even when someone added it to a workshop group.
#
#   SMOLKIT_WORKSHOP_VENV    the workshop's own venv, which the hub and every participant's server run (default
#                            $SMOLKIT_WORKSHOP_DIR/venv); prepare builds it with `make kernel` from
#   SMOLKIT_WORKSHOP_PYTHON  an interpreter every account can run (default /usr/bin/python3; not one under /root)
#   TORCH                    prepare: the torch build of that venv, cpu (default) or cu126 (see environment/README.md)
#   SMOLKIT_WORKSHOP_DIR     hub state, participants' homes, shared cache (default /srv/smolkit-workshop)
#   SMOLKIT_WORKSHOP_CACHE   the shared model cache (default $SMOLKIT_WORKSHOP_DIR/cache)
#   SMOLKIT_HUB_GROUP        the participants' group (default smolkit); SMOLKIT_HUB_ADMIN_GROUP facilitators'
#                            (default smolkit-admin): only members of these two may log in
#   SMOLKIT_WORKSHOP_MODELS  prepare: Hub models to put in the cache too, space-separated (needs the network), e.g.
#                            "HuggingFaceTB/SmolVLM-256M-Instruct HuggingFaceTB/SmolVLM-500M-Instruct"
#   start reads the SMOLKIT_HUB_* settings listed at the top of workshop/jupyterhub_config.py;
#   SMOLKIT_HUB_CONFIG names another config file (one that load_subconfig()s this one and adds to it).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKSHOP=${SMOLKIT_WORKSHOP_DIR:-/srv/smolkit-workshop}
VENV=${SMOLKIT_WORKSHOP_VENV:-$WORKSHOP/venv}
PY="$VENV/bin/python"
CACHE=${SMOLKIT_WORKSHOP_CACHE:-$WORKSHOP/cache}
STATE="$WORKSHOP/hub"
HOMES="$WORKSHOP/homes"
PASSWORDS="$STATE/passwords.txt"
ACCOUNTS="$STATE/accounts.txt"     # the accounts this script created, one a line
GROUPS_MADE="$STATE/groups.txt"    # the groups this script created
GROUP=${SMOLKIT_HUB_GROUP:-smolkit}
ADMIN_GROUP=${SMOLKIT_HUB_ADMIN_GROUP:-smolkit-admin}

die() { echo "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run it as root (sudo $0 $*): the hub creates accounts and runs each server as its participant"

# An account of the box that is neither root nor a participant: what a participant can reach, it can too.
as_nobody() { runuser -u nobody -- "$@"; }

prepare() {
    echo "== the hub's proxy: configurable-http-proxy (workshop/proxy/package-lock.json)"
    command -v npm >/dev/null || die "npm is missing: apt-get install -y npm (Node.js 20 or newer)"
    npm ci --prefix workshop/proxy --no-audit --no-fund --loglevel=error

    install -d -m 0755 -o root -g root "$WORKSHOP" "$HOMES"
    install -d -m 0700 -o root -g root "$STATE"
    echo "== the workshop's venv: $VENV (TORCH=${TORCH:-cpu}, from ${SMOLKIT_WORKSHOP_PYTHON:-/usr/bin/python3})"
    make -s kernel VENV="$VENV" PYTHON="${SMOLKIT_WORKSHOP_PYTHON:-/usr/bin/python3}" TORCH="${TORCH:-cpu}"
    [ -x "$PY" ] || die "could not build the workshop's venv in $VENV"
    "$PY" -m pip install --disable-pip-version-check -q -r requirements-hub.txt  # JupyterHub and its idle culler
    echo "== participants can run that venv and read the notebooks"
    as_nobody "$PY" -c 'import smolkit, jupyterhub.singleuser, jupyterhub_idle_culler' \
        && as_nobody test -r "$PWD/notebooks/00_setup.ipynb" \
        || die "other accounts cannot run $VENV or read $PWD/notebooks: participants' servers run as their own" \
               "accounts, so the venv's interpreter (SMOLKIT_WORKSHOP_PYTHON) and this repository must lie where" \
               "everybody can read them (e.g. /usr/bin/python3 and a clone under /opt or /srv, not under /root)"

    echo "== the shared model cache: $CACHE"
    mkdir -p "$CACHE/hf" "$CACHE/smolkit"
    chmod -R u+w "$CACHE"
    SMOLKIT_CACHE_DIR="$CACHE/smolkit" "$PY" -m smolkit convert
    for model in ${SMOLKIT_WORKSHOP_MODELS:-}; do
        echo "== downloading $model into the shared cache"
        HF_HOME="$CACHE/hf" "$PY" -c 'import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1])' "$model"
    done
    # root's, and read-only for everybody: participants' kernels read it and cannot re-enable writes (not theirs)
    chown -R root:root "$CACHE"
    chmod -R a-w,a+rX "$CACHE"
    echo "== ready: $(du -sh "$CACHE" | cut -f1) of models in $CACHE (read-only)"
}

recorded() { [ -f "$1" ] && grep -qxF -- "$2" "$1"; }
record() { ( umask 077; echo "$2" >> "$1" ); }
unrecord() {
    [ -f "$1" ] || return 0
    { grep -vxF -- "$2" "$1" || true; } > "$1.new"
    chmod 0600 "$1.new" && mv "$1.new" "$1"
}

# A workshop account: one this script created (recorded) that is still in one of its groups.
is_workshop_account() {
    recorded "$ACCOUNTS" "$1" && id -nG "$1" 2>/dev/null | tr ' ' '\n' | grep -qxF -e "$GROUP" -e "$ADMIN_GROUP"
}

# Refuse a group that exists but was not made here: its members are the box's accounts, not the workshop's.
check_group() {
    if getent group "$1" >/dev/null && ! recorded "$GROUPS_MADE" "$1"; then
        die "group '$1' already exists and was not created by $0: its members would be taken for workshop" \
            "accounts. Set $2 to a name no group has (the script creates it)"
    fi
}

make_group() { getent group "$1" >/dev/null || { groupadd --system "$1" && record "$GROUPS_MADE" "$1"; }; }

users() {
    local group=$GROUP name password
    if [ "${1:-}" = --admin ]; then group=$ADMIN_GROUP; shift; fi
    [ $# -gt 0 ] || die "usage: $0 users [--admin] NAME..."
    check_group "$GROUP" SMOLKIT_HUB_GROUP
    check_group "$ADMIN_GROUP" SMOLKIT_HUB_ADMIN_GROUP
    local -A seen=()
    for name in "$@"; do
        [[ $name =~ ^[a-z][a-z0-9_-]{0,30}$ ]] \
            || die "user name '$name': use 1-31 lower-case letters, digits, - or _, starting with a letter"
        [ -z "${seen[$name]:-}" ] || die "'$name' is named twice: each participant once (each gets one password)"
        seen[$name]=1
        if id "$name" >/dev/null 2>&1 && ! is_workshop_account "$name"; then
            die "'$name' is an account of this box, not a workshop account: choose another name"
        fi
    done
    install -d -m 0755 -o root -g root "$WORKSHOP" "$HOMES"
    install -d -m 0700 -o root -g root "$STATE"
    make_group "$GROUP"
    make_group "$ADMIN_GROUP"
    ( umask 077; touch "$PASSWORDS" )
    for name in "$@"; do
        if ! id "$name" >/dev/null 2>&1; then
            useradd --create-home --home-dir "$HOMES/$name" --shell /usr/sbin/nologin --user-group \
                --groups "$group" --comment "smolkit workshop" -K HOME_MODE=0700 "$name"
            recorded "$ACCOUNTS" "$name" || record "$ACCOUNTS" "$name"
        else
            usermod --append --groups "$group" "$name"  # --admin makes an existing participant a facilitator
        fi
        chmod 0700 "$(getent passwd "$name" | cut -d: -f6)"
        password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
        echo "$name:$password" | chpasswd
        { grep -v "^$name " "$PASSWORDS" || true; echo "$name $password"; } > "$PASSWORDS.new"
        chmod 0600 "$PASSWORDS.new" && mv "$PASSWORDS.new" "$PASSWORDS"
        echo "$name $password"
    done
    echo "== kept in $PASSWORDS (root only); give each participant their line" >&2
}

remove() {
    local names=("$@") name group
    if [ "${1:-}" = --all ]; then  # the recorded accounts only: others someone added to the groups stay
        mapfile -t names < <(getent group "$GROUP" "$ADMIN_GROUP" | cut -d: -f4 | tr ',' '\n' | grep . | sort -u \
            | while read -r name; do if recorded "$ACCOUNTS" "$name"; then echo "$name"; fi; done)
    fi
    [ "${1:-}" = --all ] || [ $# -gt 0 ] || die "usage: $0 remove NAME... | --all"
    for name in "${names[@]}"; do
        is_workshop_account "$name" || die "'$name' is not a workshop account: not removed"
        ! pgrep -u "$name" >/dev/null || die "'$name' still runs processes: stop the hub first"
    done
    for name in "${names[@]}"; do
        userdel --remove "$name" 2>/dev/null || ! id "$name" >/dev/null 2>&1 || die "could not remove '$name'"
        unrecord "$ACCOUNTS" "$name"
        if [ -f "$PASSWORDS" ]; then
            { grep -v "^$name " "$PASSWORDS" || true; } > "$PASSWORDS.new"
            chmod 0600 "$PASSWORDS.new" && mv "$PASSWORDS.new" "$PASSWORDS"
        fi
        echo "removed $name"
    done
    if [ "${1:-}" = --all ]; then
        for group in "$GROUP" "$ADMIN_GROUP"; do  # only a group this script made, and only once empty
            getent group "$group" >/dev/null || continue
            recorded "$GROUPS_MADE" "$group" || { echo "group '$group' was not made here: left as it is" >&2; continue; }
            if [ -n "$(getent group "$group" | cut -d: -f4)" ]; then
                echo "group '$group' still has members that are no workshop accounts: left" >&2
                continue
            fi
            groupdel "$group" 2>/dev/null || ! getent group "$group" >/dev/null || die "could not remove '$group'"
            unrecord "$GROUPS_MADE" "$group"
        done
    fi
    return 0
}

start() {
    [ -x "$VENV/bin/jupyterhub" ] || die "no workshop venv in $VENV: run \`$0 prepare\` first"
    export SMOLKIT_WORKSHOP_DIR="$WORKSHOP" SMOLKIT_WORKSHOP_CACHE="$CACHE" SMOLKIT_HUB_GROUP="$GROUP"
    export SMOLKIT_HUB_ADMIN_GROUP="$ADMIN_GROUP"
    exec "$VENV/bin/jupyterhub" -f "${SMOLKIT_HUB_CONFIG:-workshop/jupyterhub_config.py}"
}

capacity() {
    [ -x "$PY" ] || die "no workshop venv in $VENV: run \`$0 prepare\` first"
    # the GPU shared as the hub will share it: through MPS where the hub starts it (workshop/mps_service.py), and,
    # as root, with a system account per kernel under one multi-user MPS server, as the hub runs participants
    local mps variant=plain+mps
    mps=$("$PY" workshop/mps_service.py wanted) || exit 2
    [ "$(id -u)" = 0 ] && variant=plain+mps+accounts
    [ "$mps" = yes ] && set -- --variant "$variant" "$@"  # ARGS' own --variant, given later, wins
    SMOLKIT_CACHE_DIR="$CACHE/smolkit" HF_HOME="$CACHE/hf" "$PY" bench/capacity.py "$@"
}

command=${1:-}
shift || true
case "$command" in
    prepare) prepare ;;
    users) users "$@" ;;
    remove) remove "$@" ;;
    start) start ;;
    capacity) capacity "$@" ;;
    *) echo "usage: $0 prepare | users [--admin] NAME... | start | remove NAME...|--all | capacity [ARGS]" >&2; exit 2 ;;
esac
