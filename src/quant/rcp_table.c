/* The 1 MiB bitmap of src/quant/data/rcp_approx_ftz_sm90.bin, linked in with .incbin:
 * bit m is set where the GPU's rcp.approx.ftz.f32 of a float with mantissa m differs from
 * the correctly rounded reciprocal (produced by tools/devprobe/rcp_probe.cu on an H100). */
#ifndef MSBNB_RCP_TABLE
#error "MSBNB_RCP_TABLE must name the bitmap file"
#endif
__asm__(".section .rodata\n"
        ".balign 64\n"
        ".global msbnb__rcp_approx_bitmap\n"
        ".hidden msbnb__rcp_approx_bitmap\n"
        "msbnb__rcp_approx_bitmap:\n"
        ".incbin \"" MSBNB_RCP_TABLE "\"\n"
        ".previous\n");
