# snmplb for XDMCP: choose the server for `X -query` with get_hosts.
#
# XDMCP uses one server: LTSP's xdmcp screen script runs
#   XDM_SERVER=${XDM_SERVER:-$SERVER}; X -query $XDM_SERVER
# Source this file from that script just before that line. An XDM_SERVER set
# in lts.conf still wins; when get_hosts prints nothing, SERVER is used as before.
_snmplb_get_hosts=${SNMPLB_GET_HOSTS:-/usr/share/ltsp/get_hosts}
if [ -z "$XDM_SERVER" ] && [ -x "$_snmplb_get_hosts" ]; then
    XDM_SERVER=$("$_snmplb_get_hosts")
    XDM_SERVER=${XDM_SERVER%% *}
    [ -n "$XDM_SERVER" ] && export XDM_SERVER
fi
unset _snmplb_get_hosts
