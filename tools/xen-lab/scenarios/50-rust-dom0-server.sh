# Rust <-> Rust, dom0 serves: `vchan pump server` in dom0, `vchan pump client` in the domU, data
# both ways at once, every byte checked against the sender's pattern. Rings: in-page (C's default
# 1024/2048), 64 KiB and 1 MiB (multi-page); 64 MiB each way while spinning (VC_SPIN_US, see
# guest/vchan.sh), then 1 MiB each way with --spin-us 0 (every ring-full an event-channel
# wake-up). Both sides check the shared (gntalloc) and mapped (gntdev) bytes in /proc/PID/maps.
# Figures: TAG=to-client/to-server MB/s, as the server measured them (emulation: sanity only).
LAB_TIMEOUT=2400
. /lab/guest/pump.sh

dom0() { pump_server_side "$DOMU"; }
domu() { pump_client_side 0; }
