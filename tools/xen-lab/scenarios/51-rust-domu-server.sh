# The reverse of 50-rust-dom0-server: the domU serves (`vchan pump server 0 ...` under its own
# /local/domain/<id>/data), dom0 connects. Same rounds, same checks, same figures.
LAB_TIMEOUT=2400
. /lab/guest/pump.sh

dom0() { pump_client_side "$DOMU"; }
domu() { pump_server_side 0; }
