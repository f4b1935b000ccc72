# fpgaformer overlay build: Vivado project -> block design -> bitstream + .hwh, copied as the PYNQ overlay.
# Run from BUILD/overlay:   vivado -mode batch -source build.tcl
# config.tcl (written by `fpgaformer build`) sets ff_part, ff_family, ff_clock_mhz, the IP names/VLNVs, the
# DMA length width, the stream width, the address map and the output paths.

source [file join [file dirname [info script]] config.tcl]

create_project -force $ff_design ./vivado -part $ff_part
set_property ip_repo_paths [list $ff_ip_repo] [current_project]
update_ip_catalog

source [file join [file dirname [info script]] block_design.tcl]

make_wrapper -files [get_files ./vivado/${ff_design}.srcs/sources_1/bd/${ff_design}/${ff_design}.bd] -top
add_files -norecurse ./vivado/${ff_design}.gen/sources_1/bd/${ff_design}/hdl/${ff_design}_wrapper.v
set_property top ${ff_design}_wrapper [current_fileset]

launch_runs impl_1 -to_step write_bitstream -jobs $ff_jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] != "100%"} {
    error "implementation failed: see ./vivado/${ff_design}.runs/impl_1/runme.log"
}

# the PYNQ overlay: same basename for .bit and .hwh
file copy -force ./vivado/${ff_design}.runs/impl_1/${ff_design}_wrapper.bit $ff_bit_out
file copy -force ./vivado/${ff_design}.gen/sources_1/bd/${ff_design}/hw_handoff/${ff_design}.hwh $ff_hwh_out
puts "overlay written: $ff_bit_out $ff_hwh_out"
