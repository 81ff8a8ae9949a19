"""torch.optim.AdamW(fused=True) step time on 256 M f32 parameters (one tensor), the baseline
of bench_cuda's AdamW table: prints the median ms over 9 batches of 3 steps (CUDA events),
after 8 warm-up steps, on random N(0, 0.02) parameters and N(0, 1e-3) gradients.
Usage: python3 bench/torch_adamw.py  ->  'torch_fused_adamw_ms <ms> <gpu name>'"""
import torch

n = 256 << 20
g0 = torch.Generator(device="cuda").manual_seed(11)
p = torch.nn.Parameter(torch.randn(n, device="cuda", generator=g0) * 0.02)
p.grad = torch.randn(n, device="cuda", generator=g0) * 1e-3
opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=True)
for _ in range(8):
    opt.step()
torch.cuda.synchronize()
times = []
for _ in range(9):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(3):
        opt.step()
    e1.record()
    e1.synchronize()
    times.append(e0.elapsed_time(e1) / 3)
times.sort()
print(f"torch_fused_adamw_ms {times[len(times) // 2]:.4f} {torch.cuda.get_device_name()}")
