# fpgaformer overlay block design (Vivado IP integrator). Sourced by build.tcl after config.tcl, which
# `fpgaformer build` writes from the overlay contract (fpgaformer.json): every address, width and name below
# comes from there (see overlays/README.md for the protocol).
#
#   PS master (HPM0 / GP0) -> interconnect -> fpgaformer_0 (s_axi_control), axi_dma_0 (S_AXI_LITE),
#                                             axi_gpio_reset (S_AXI)
#   axi_dma_0 M_AXIS_MM2S -> fpgaformer_0 in_stream;  fpgaformer_0 out_stream -> axi_dma_0 S_AXIS_S2MM
#   fpgaformer_0 m_axi_gmem0 (weights), m_axi_gmem1 (KV cache), axi_dma_0 M_AXI_MM2S/S2MM -> PS HP0 (DDR)
#   axi_gpio_reset gpio_io_o[0] AND the system reset -> fpgaformer_0 ap_rst_n

create_bd_design $ff_design

if {$ff_family eq "zynq-ultrascale+"} {
    set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e zynq_ultra_ps_e_0]
    apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} $ps
    set_property -dict [list CONFIG.PSU__USE__M_AXI_GP0 {1} CONFIG.PSU__USE__M_AXI_GP1 {0} \
        CONFIG.PSU__USE__S_AXI_GP2 {1} CONFIG.PSU__SAXIGP2__DATA_WIDTH {128} \
        CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $ff_clock_mhz] $ps
    set ps_master "/zynq_ultra_ps_e_0/M_AXI_HPM0_FPD"
    set ps_slave "/zynq_ultra_ps_e_0/S_AXI_HP0_FPD"
    set ps_clk "/zynq_ultra_ps_e_0/pl_clk0"
} else {
    set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7 processing_system7_0]
    apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 -config {make_external "FIXED_IO, DDR" apply_board_preset "1"} $ps
    set_property -dict [list CONFIG.PCW_USE_S_AXI_HP0 {1} CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $ff_clock_mhz] $ps
    set ps_master "/processing_system7_0/M_AXI_GP0"
    set ps_slave "/processing_system7_0/S_AXI_HP0"
    set ps_clk "/processing_system7_0/FCLK_CLK0"
}

# the HLS kernel (exported by hls.tcl into the IP repository)
set kernel [create_bd_cell -type ip -vlnv $ff_kernel_vlnv $ff_kernel_name]

# AXI DMA, simple mode, no scatter-gather; the length register width bounds one transfer (PG021)
set dma [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma $ff_dma_name]
set_property -dict [list CONFIG.c_include_sg {0} CONFIG.c_sg_length_width $ff_dma_length_width \
    CONFIG.c_m_axis_mm2s_tdata_width $ff_stream_bits CONFIG.c_s_axis_s2mm_tdata_width $ff_stream_bits \
    CONFIG.c_m_axi_mm2s_data_width $ff_stream_bits CONFIG.c_m_axi_s2mm_data_width $ff_stream_bits \
    CONFIG.c_mm2s_burst_size {64} CONFIG.c_s2mm_burst_size {64}] $dma

# reset GPIO: one output bit that drives the kernel's ap_rst_n (the runtime pulses it to recover)
set gpio [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_gpio $ff_reset_name]
set_property -dict [list CONFIG.C_GPIO_WIDTH {1} CONFIG.C_ALL_OUTPUTS {1} CONFIG.C_DOUT_DEFAULT {0x00000001}] $gpio
set rst_and [create_bd_cell -type ip -vlnv xilinx.com:ip:util_vector_logic kernel_rst_and]
set_property -dict [list CONFIG.C_SIZE {1} CONFIG.C_OPERATION {and}] $rst_and

# control path
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Master $ps_master Clk $ps_clk] [get_bd_intf_pins $ff_kernel_name/s_axi_control]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Master $ps_master Clk $ps_clk] [get_bd_intf_pins $ff_dma_name/S_AXI_LITE]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Master $ps_master Clk $ps_clk] [get_bd_intf_pins $ff_reset_name/S_AXI]

# data path: streams and memory masters
connect_bd_intf_net [get_bd_intf_pins $ff_dma_name/M_AXIS_MM2S] [get_bd_intf_pins $ff_kernel_name/in_stream]
connect_bd_intf_net [get_bd_intf_pins $ff_kernel_name/out_stream] [get_bd_intf_pins $ff_dma_name/S_AXIS_S2MM]
foreach master [list $ff_dma_name/M_AXI_MM2S $ff_dma_name/M_AXI_S2MM $ff_kernel_name/m_axi_gmem0 $ff_kernel_name/m_axi_gmem1] {
    apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Slave $ps_slave Clk $ps_clk] [get_bd_intf_pins $master]
}

# kernel reset = system reset AND gpio bit 0
set sys_rst [get_bd_pins -of_objects [get_bd_cells -filter {VLNV =~ "*proc_sys_reset*"}] -filter {NAME == peripheral_aresetn}]
connect_bd_net $sys_rst [get_bd_pins kernel_rst_and/Op1]
connect_bd_net [get_bd_pins $ff_reset_name/gpio_io_o] [get_bd_pins kernel_rst_and/Op2]
disconnect_bd_net [get_bd_nets -of_objects [get_bd_pins $ff_kernel_name/ap_rst_n]] [get_bd_pins $ff_kernel_name/ap_rst_n]
connect_bd_net [get_bd_pins kernel_rst_and/Res] [get_bd_pins $ff_kernel_name/ap_rst_n]

# addresses exactly as the contract says
foreach {name seg base range} $ff_address_map {
    set s [get_bd_addr_segs -of_objects [get_bd_addr_spaces -of_objects [get_bd_intf_pins $ps_master]] -filter "NAME =~ *${name}*"]
    set_property offset $base $s
    set_property range $range $s
}
assign_bd_address
validate_bd_design
save_bd_design
