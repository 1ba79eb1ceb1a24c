#!/usr/bin/env python3
"""dev/naive_chunk_model.py: a numpy model of attention/naive.cu's call sequence, to check the
query-row chunking without a GPU (dev/attention_notes.md, naive v9).

It mirrors the kernel's chunk plan (chunk_plan, chunk_span), its operands' pointer offsets
(b, head, i0 * per_query + klo * per_key), every cuBLAS call (op, m, n, k, ld; column-major) of the
forward and backward in their order, and the row kernels' read and write ranges (P whole rows,
dS over the vectors that meet the chunk's keys), on NaN-poisoned buffers (the workspace poisoned
again between the passes, as test/gpu/test_attention.cu does), and compares O, dQ, dK, dV with a
plain float64 attention. Masks: causal, window, key padding; GQA; fp32 (S in saved, dS over dP)
and 16-bit (separate chunk buffers, fp32 dK sum) layouts. The row kernels' arithmetic (bias,
ALiBi, documents) is not modelled. Keep it in step with naive.cu when its call sequence changes.
Usage: python3 dev/naive_chunk_model.py   (needs numpy; prints one line per case, exit 1 on a mismatch)
"""
import sys

import numpy as np
NaN = np.nan
def plan(T, causal, window, maxc=16, minr=256):
    r = -(-T // maxc); r = -(-r // 64) * 64; r = max(r, minr); r = min(r, T)
    return dict(T=T, rows=r, count=-(-T // r), causal=causal, window=window)
def span(p, c):
    i0 = c * p['rows']; n = min(p['rows'], p['T'] - i0)
    W = p['window']; T = p['T']
    klo = i0 - W + 1 if W > 0 and i0 - W + 1 > 0 else 0
    e = i0 + n if p['causal'] else (i0 + n - 1 + W if W > 0 else T)
    return i0, n, klo, min(e, T)
def row_iv(i, b, T, causal, W, kb, ke):
    a, e = 0, (i + 1 if causal else T)
    if W > 0:
        a = max(a, i - W + 1)
        if not causal and i < T - W: e = min(e, i + W)
    if kb is not None: a = max(a, kb[b])
    if ke is not None: e = min(e, ke[b])
    e = max(0, min(e, T)); return max(0, min(a, e)), e
def gemm(mem, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    (ab, ao), (bb, bo), (cb, co) = A, B, C
    a = mem[ab]; b = mem[bb]; c = mem[cb]
    ri = np.arange(m)[:, None]; ci = np.arange(n)[None, :]
    kk = np.arange(k)
    # op(A) m x k
    if ta == 'N': Aop = a[ao + np.arange(m)[:, None] + kk[None, :] * lda]
    else: Aop = a[ao + kk[None, :] + np.arange(m)[:, None] * lda]
    if tb == 'N': Bop = b[bo + kk[:, None] + np.arange(n)[None, :] * ldb]
    else: Bop = b[bo + np.arange(n)[None, :] + kk[:, None] * ldb]
    idx = co + ri + ci * ldc
    res = alpha * (Aop @ Bop)
    c[idx] = res if beta == 0 else res + beta * c[idx]
def run(B, T, H, Hkv, D, causal, W, keypad, fp32, seed=0):
    rng = np.random.default_rng(seed)
    C = H * D; ld = C + 2 * Hkv * D; ldo = C; scale = 1 / np.sqrt(D)
    qkv = rng.standard_normal(B * T * ld); dout = rng.standard_normal(B * T * ldo)
    kb = ke = None
    if keypad: kb = [0] + [T // 4] * (B - 1); ke = [T - T // 3] + [T] * (B - 1)
    p = plan(T, causal, W); R = p['rows']; nc = p['count']; group = H // Hkv
    narrow = not fp32
    BH = B * H
    mem = dict(qkv=qkv.copy(), out=np.full(B * T * ldo, NaN), dout=dout, dqkv=np.full(B * T * ld, NaN),
               saved=np.full(BH * T * T, NaN), f32=np.full(BH * R * T, NaN), ds=np.full(BH * R * T, NaN),
               dk_acc=np.full(B * T * Hkv * D, NaN), dv_acc=np.full(B * T * Hkv * D, NaN))
    has_dk = narrow and (nc > 1 or group > 1); has_dv = narrow and group > 1
    # operands: (buf, base, ld, sb, sh, per_query, per_key, kv)
    def tok(buf, base, l, kv): return (buf, base, l, T * l, D, 0 if kv else l, l if kv else 0, kv)
    def acc(buf): l = Hkv * D; return (buf, 0, l, T * l, D, 0, l, 1)
    def sc(buf, rows, fi0): ph = rows * T; return (buf, 0, T, ph * H, ph, T if fi0 else 0, 1, 0)
    ops = dict(Q=tok('qkv', 0, ld, 0), K=tok('qkv', C, ld, 1), V=tok('qkv', C + Hkv * D, ld, 1),
               O=tok('out', 0, ldo, 0), DO=tok('dout', 0, ldo, 0), DQ=tok('dqkv', 0, ld, 0),
               DK=acc('dk_acc') if has_dk else tok('dqkv', C, ld, 1),
               DV=acc('dv_acc') if has_dv else tok('dqkv', C + Hkv * D, ld, 1),
               P=sc('saved', T, True), F32=sc('f32', R, False), DS=sc('ds' if narrow else 'f32', R, False))
    BG = B * Hkv
    def ptr(slot, c, idx):
        buf, base, l, sb, sh, pq, pk, kv = ops[slot]
        hl, rem = divmod(idx, BG); b, g = divmod(rem, Hkv); h = g * group + hl
        i0, n, klo, khi = span(p, c)
        return (buf, base + b * sb + (g if kv else h) * sh + i0 * pq + klo * pk)
    def gh(c, ta, tb, m, n, k, alpha, A, Bs, beta, Cs, first, count):
        for idx in range(first, first + count):
            gemm(mem, ta, tb, m, n, k, alpha, ptr(A, c, idx), ops[A][2], ptr(Bs, c, idx), ops[Bs][2], beta,
                 ptr(Cs, c, idx), ops[Cs][2])
    def gall(c, ta, tb, m, n, k, alpha, A, Bs, Cs): gh(c, ta, tb, m, n, k, alpha, A, Bs, 0.0, Cs, 0, BH)
    def ggroup(c, ta, tb, m, n, k, alpha, A, Bs, Cs, accum):
        for hl in range(group): gh(c, ta, tb, m, n, k, alpha, A, Bs, 1.0 if (accum or hl) else 0.0, Cs, hl * BG, BG)
    def rows_kernel(fwd, x):
        i0, n, klo, khi = x
        hs_in, hs_p, hs_out = R, T, R
        f32 = ('f32', 0); pp = ('saved', i0 * T); out = ('ds' if narrow else 'f32', 0)
        if fwd:
            out = pp; hs_out = T
            if not narrow: f32 = pp; hs_in = T
        for head in range(BH):
            b, h = divmod(head, H)
            for il in range(n):
                i = i0 + il; lo, hi = row_iv(i, b, T, causal, W, kb, ke)
                fr = mem[f32[0]]; fo = f32[1] + (head * hs_in + il) * T
                orow = mem[out[0]]; oo = out[1] + (head * hs_out + il) * T
                if fwd:
                    s = fr[fo + lo:fo + hi].copy()
                    assert not np.isnan(s).any(), ('S unwritten', i, lo, hi, x)
                    prow = np.zeros(T)
                    if hi > lo:
                        e = np.exp(s - s.max()); prow[lo:hi] = e / e.sum()
                    orow[oo:oo + T] = prow
                else:
                    pr = mem['saved']; po = pp[1] + (head * hs_p + il) * T
                    pv = pr[po + lo:po + hi]; dv = fr[fo + lo:fo + hi]
                    assert not np.isnan(pv).any() and not np.isnan(dv).any(), ('P/dP unwritten', x)
                    dsum = (pv * dv).sum()
                    ds = np.zeros(T); ds[lo:hi] = pv * (dv - dsum)
                    a = klo // 4 * 4; e = min(T, -(-khi // 4) * 4)  # vectors meeting [klo, khi)
                    orow[oo + a:oo + e] = ds[a:e]
    # forward
    S = 'F32' if narrow else 'P'
    for c in range(nc):
        x = span(p, c); i0, n, klo, khi = x; kn = khi - klo
        gall(c, 'T', 'N', kn, n, D, scale, 'K', 'Q', S)
        rows_kernel(True, x)
        gall(c, 'N', 'N', D, n, kn, 1.0, 'V', 'P', 'O')
    # poison the workspace between passes, as the test does
    for w in ('f32', 'ds', 'dk_acc', 'dv_acc'): mem[w][:] = NaN
    ggroup(0, 'N', 'T', D, T, T, 1.0, 'DO', 'P', 'DV', False)
    accum = nc > 1
    if accum:
        if has_dk: mem['dk_acc'][:] = 0
        else:
            for t in range(B * T): mem['dqkv'][t * ld + C: t * ld + C + Hkv * D] = 0
    for c in range(nc):
        x = span(p, c); i0, n, klo, khi = x; kn = khi - klo
        gall(c, 'T', 'N', kn, n, D, 1.0, 'V', 'DO', 'F32')
        rows_kernel(False, x)
        gall(c, 'N', 'N', D, n, kn, scale, 'K', 'DS', 'DQ')
        ggroup(c, 'N', 'T', D, kn, n, scale, 'Q', 'DS', 'DK', accum)
    if has_dk:
        for t in range(B * T): mem['dqkv'][t * ld + C: t * ld + C + Hkv * D] = mem['dk_acc'][t * Hkv * D:(t + 1) * Hkv * D]
    if has_dv:
        o = C + Hkv * D
        for t in range(B * T): mem['dqkv'][t * ld + o: t * ld + o + Hkv * D] = mem['dv_acc'][t * Hkv * D:(t + 1) * Hkv * D]
    # reference
    X = qkv.reshape(B, T, ld); dO = dout.reshape(B, T, H, D)
    q = X[:, :, :C].reshape(B, T, H, D); k = X[:, :, C:C + Hkv * D].reshape(B, T, Hkv, D)
    v = X[:, :, C + Hkv * D:].reshape(B, T, Hkv, D)
    o_ref = np.zeros((B, T, H, D)); dq = np.zeros_like(o_ref); dk = np.zeros((B, T, Hkv, D)); dv = np.zeros_like(dk)
    for b in range(B):
        mask = np.zeros((T, T), bool)
        for i in range(T):
            lo, hi = row_iv(i, b, T, causal, W, kb, ke); mask[i, lo:hi] = True
        for h in range(H):
            g = h // group
            s = q[b, :, h] @ k[b, :, g].T * scale; s = np.where(mask, s, -np.inf)
            m = s.max(1, keepdims=True); m = np.where(np.isfinite(m), m, 0)
            e = np.where(mask, np.exp(s - m), 0); l = e.sum(1, keepdims=True); P = np.where(l > 0, e / np.where(l > 0, l, 1), 0)
            o_ref[b, :, h] = P @ v[b, :, g]
            dP = dO[b, :, h] @ v[b, :, g].T; dS = P * (dP - (P * dP).sum(1, keepdims=True))
            dq[b, :, h] = dS @ k[b, :, g] * scale; dk[b, :, g] += dS.T @ q[b, :, h] * scale; dv[b, :, g] += P.T @ dO[b, :, h]
    got = mem['dqkv'].reshape(B, T, ld); go = mem['out'].reshape(B, T, H, D)
    errs = [np.abs(go - o_ref).max(), np.abs(got[:, :, :C].reshape(o_ref.shape) - dq).max(),
            np.abs(got[:, :, C:C + Hkv * D].reshape(dk.shape) - dk).max(),
            np.abs(got[:, :, C + Hkv * D:].reshape(dv.shape) - dv).max()]
    ok = all(e < 1e-9 for e in errs)  # NaN fails
    print(f"B={B} T={T} H={H} Hkv={Hkv} D={D} causal={causal} W={W} keypad={keypad} fp32={fp32} R={R} chunks={nc}:",
          " ".join(f"{e:.1e}" for e in errs), "ok" if ok else "FAIL")
    return ok
cases = [(1, 300, 2, 2, 8, True, 0, False), (1, 385, 2, 2, 8, False, 78, False), (1, 600, 4, 2, 8, True, 61, True),
         (2, 513, 2, 1, 8, False, 0, True), (1, 5, 1, 1, 4, True, 0, False), (1, 1000, 1, 1, 4, True, 201, False),
         (1, 2100, 1, 1, 4, True, 0, False), (1, 4100, 1, 1, 4, True, 0, False), (1, 700, 2, 2, 4, False, 0, False),
         (2, 260, 4, 2, 4, True, 3, True), (1, 800, 2, 1, 4, False, 150, True)]
allok = True
for cs in cases:
    for fp32 in (False, True):
        allok &= run(*cs, fp32=fp32)
print("ALL OK" if allok else "SOME FAILED"); sys.exit(0 if allok else 1)
