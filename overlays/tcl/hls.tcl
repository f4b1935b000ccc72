# Vitis HLS: synthesise the overlay's top function (BUILD/overlay/hls/fpgaformer_top.cpp, generated from the
# contract) with the backend's kernels, and export it as IP for the block design.
# Run from BUILD/overlay:   vitis_hls -f hls.tcl

source [file join [file dirname [info script]] config.tcl]

open_project -reset hls_project
set_top fpgaformer_top
add_files hls/fpgaformer_top.cpp -cflags "-std=c++14 -I$ff_hls_include -I$ff_backend_dir"
open_solution -reset solution1 -flow_target vivado
set_part $ff_part
create_clock -period [expr {1000.0 / $ff_clock_mhz}] -name default
config_export -format ip_catalog -vendor fpgaformer.org -library hls -ipname fpgaformer_top -version 1.0
csynth_design
export_design -format ip_catalog -output $ff_ip_repo/fpgaformer_top.zip
exit
