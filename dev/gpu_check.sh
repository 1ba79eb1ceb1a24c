#!/usr/bin/env bash
# dev/gpu_check.sh: everything a GPU session checks, in one script, a short table last.
#
#   bash dev/gpu_check.sh build tests attention masks peers ctypes gpt2 sizes bytes grids attnbase llmc kernels trace gemms torchgpt
#
# Stages (any subset, in this order):
#   build      make for sm_90 (16 jobs): the trainer, the GPU tests, the benchmarks
#   tests      make test-gpu (every CUDA kernel and the CUDA trainer against the CPU reference)
#   attention  dev/bench_attention: the attention microbenchmark table
#   masks      the mask family (causal, window 1024, documents of 2048, ALiBi) at T = 4096 and
#              16384 for $MASK_KERNELS (default: flash-tma flash-mma cudnn; bench_attention's
#              `flash` is the registry row itself, not what --attn flash resolves to), then PyTorch's
#              FlexAttention on the same masks (dev/flex_masks.py), TFLOP/s over unmasked pairs
#   peers      PyTorch's SDPA backends (FlashAttention-2, cuDNN, efficient) and FlexAttention on
#              bench_attention's causal / non-causal shapes (dev/sdpa_peers.py, D = $PEER_D)
#   ctypes     libattention.so driven from Python against scaled_dot_product_attention
#              (dev/attention_ctypes.py)
#   gpt2       GPT-2 124M, vocab 50257, T=1024, bf16: naive and flash at B = 16, 32, 64
#   sizes      GPT-2 medium and large at T=1024, naive and flash
#   bytes      byte-level GPT-2 small, 32768 tokens a step, T = 1024 / 4096 / 8192, every kernel
#   grids      the bench presets: xformers-issue and flash-blog ($FLASH_BLOG_ARGS, default
#              --bench-quick --bench-max-seconds 200)
#   attnbase   older versions' attention kernels side by side: $BASELINE (a `git archive` tarball
#              in local/, carried along; or several, space-separated: variants to compare in one
#              call) is built in /tmp/baseline_N (bench_attention only; no cuDNN there) and
#              $AB_KERNEL (default flash-tma) runs at each of $AB_SHAPES (one per line) with each
#              of them and this build's bench_attention, alternating, twice: same-call ratios
#   baseline   an older version side by side: $BASELINE (a `git archive` tarball in local/,
#              carried along) is built in /tmp/baseline and GPT-2 124M B=16 flash with CUDA
#              graphs runs twice with each binary, alternating (same-call ratio of two builds;
#              $OLD_ARGS: extra flags for the old binary, e.g. --cuda-graph before 2026-12-01)
#   llmc       llm.c side by side: GPT-2 124M (d12, vocab 50257 padded to 50304), T = 1024, bf16,
#              B = $LLMC_BS (16 64): this trainer ($LLMC_OURS, default --attn flash and cudnn; an
#              entry KERNEL:MODE adds --recompute MODE, a +fp8 after it --matmul fp8, each @FLAG
#              after those --FLAG (flash@no-cuda-graph); plus $OURS_ARGS) and llm.c's train_gpt2cu (cuDNN attention, its default recompute 1)
#              alternating, $LLMC_ROUNDS (2) times; $LLMC_BUILDS ("TAG=local/NAME.tar.gz ...", `git
#              archive` tarballs carried along) adds other builds of this trainer (built in
#              /tmp/llmc_build_TAG, without cuDNN), each run with --attn flash $OURS_ARGS in every round. llm.c's source is a git-ignored copy in local/llmc (carried;
#              built there with USE_CUDNN=1 unless local/llmc/train_gpt2cu exists) whose
#              cudaMallocConditionallyManaged exits instead of falling back to managed memory.
#              Both read the same bytes as one llm.c token file (dev/llmc_tokens.py); peak memory
#              is sampled with nvidia-smi for both (MiB used over the idle level), beside each
#              one's own figure.
#   kernels    one training step's GPU time per kernel under ncu (dev/kernel_times.py): GPT-2 124M,
#              vocab 50257, T = 1024, bf16, B = 16, eager, 3 steps, the last reported; $KERNELS_ARGS
#              replaces the trainer flags (default --attn flash)
#   trace      the time between kernels: GPT-2 124M, vocab 50257, T = 1024, bf16, B = 16, 12 steps
#              under dev/cupti_trace.c (CUPTI activity records through CUDA's injection hook), with
#              CUDA graphs and without, summarised by dev/trace_gaps.py (wall, busy, idle by cause,
#              largest gaps); $TRACE_ARGS replaces the trainer flags (default --attn flash)
#   gemms      dev/bench_matmul_algos: every cuBLASLt heuristic for each GEMM of a GPT-2 124M step
#              (and the bias-gradient epilogues), first pick against the fastest
#   torchgpt   PyTorch eager training peers (dev/torch_gpt2_bench.py) beside this trainer, memory
#              sampled for both: the xFormers issue's model (6 layers, 1024 channels, 8 heads, vocab
#              256, T = 2048, 2 x 4 accumulation) in fp32 (TF32 allowed) causal / none / dense with
#              PyTorch's efficient kernel vs memeff, bf16 dense vs memeff; and byte-level GPT-2 small
#              at B = 1, T = $LONG_TS (16K 32K 64K; empty: none) with PyTorch's cuDNN SDPA vs $LONG_ATTNS
# ATTNS="flash" limits the gpt2 and bytes stages to those kernels.
# cudnn: attention/cudnn.cu takes minutes to compile (cudnn-frontend's headers) on one core. To save
# device time, compile it here with a portable host ISA and carry the objects (and
# local/cudnn-frontend) along: `make CPU_ARCH=x86-64-v3 build/attention/cudnn.o
# build/pic/attention/cudnn.o`, carry those two paths but not their .d files, and `touch` them on
# the device before the build (2026-12-01: the H200 machine's cuDNN is in /usr/include/x86_64-linux-gnu).
# Logs and tables go to $OUT (or /tmp/gpu_check). Data: $DATA (default local/enwik8_head, a
# git-ignored copy of the enwik8 prefix carried to the GPU machine); throughput does not depend
# on which text is read.
set -u
OUT=${OUT:-/tmp/gpu_check}
DATA=${DATA:-local/enwik8_head}
STEPS=${STEPS:-20}
export NCCL_NVLS_ENABLE=0
mkdir -p "$OUT"
TABLE="$OUT/table.md"

header() { echo; echo "== $*"; }

# train NAME ARGS...: one short training run; appends "| NAME | tok/s | ms | MFU | peak GiB |".
train() {
    local name=$1; shift
    local log="$OUT/$name.jsonl"
    rm -f "$log"
    timeout 240 ./train_gpt2 --data "$DATA" --steps "$STEPS" --warmup 2 --val-every 0 \
        --val-batches 1 --sample-len 0 --quiet --log "$log" "$@" >"$OUT/$name.out" 2>&1
    local rc=$?
    local row
    if [ $rc -eq 0 ] && grep -q '"type":"summary"' "$log"; then
        row=$(python3 - "$log" <<'EOF'
import json, sys
s = [json.loads(l) for l in open(sys.argv[1]) if '"summary"' in l][-1]
print(f"| {s['tok_per_s']/1e3:.1f}K | {s['ms_per_step']:.1f} | {100*s['mfu']:.1f}% | {s['peak_mem_bytes']/2**30:.2f} |")
EOF
)
    else
        row="| $(grep -o -m1 'needs .*' "$OUT/$name.out" | cut -c1-60 || true) rc=$rc | | | |"
        grep -q 'needs' "$OUT/$name.out" && row="| OOM ($(grep -o -m1 'needs [0-9.]* GiB' "$OUT/$name.out")) | | | |"
    fi
    echo "| $name $row" | tee -a "$TABLE"
}

# build_tarball DIR TARBALL JOBS TARGET: an older build (a `git archive` tarball) unpacked into
# DIR (emptied first) and TARGET made there; the log in DIR/build.log.
build_tarball() {
    rm -rf "$1" && mkdir -p "$1" && tar -xzf "$2" -C "$1" && (cd "$1" && make -j"$3" GPU_ARCH=90 "$4" >build.log 2>&1)
}

table_header() {
    { echo; echo "### $*"; echo; echo "| run | tokens/sec | ms/step | MFU | peak GiB (held) |"; echo "|---|---|---|---|---|"; } | tee -a "$TABLE"
}

stage_build() {
    header build
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    date -u
    make -j16 GPU_ARCH=90 all build/test/gpu/test_attention build/test/gpu/test_trainer \
        build/dev/bench_attention >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
    echo "built"
}

stage_tests() {
    header "make test-gpu"
    timeout 400 make -s GPU_ARCH=90 test-gpu >"$OUT/test_gpu.log" 2>&1
    echo "rc=$?"
    grep -E "FAIL|passed, " "$OUT/test_gpu.log" | tail -25
}

stage_attention() {
    header "attention microbenchmark"
    timeout 300 ./build/dev/bench_attention >"$OUT/bench_attention.log" 2>&1
    echo "rc=$?"
    tail -45 "$OUT/bench_attention.log"
}

stage_masks() {
    header "mask family: bench_attention (fwd+bwd / fwd TFLOP/s over unmasked pairs), then FlexAttention"
    for k in ${MASK_KERNELS:-flash-tma flash-mma cudnn}; do
        for m in "" window=1024 docs=2048 alibi; do
            for T in 4096 16384; do
                timeout 60 ./build/dev/bench_attention "$k" T=$T D=64 $m 2>&1 | grep -E "^$k |unsupported|rror" |
                    head -2 | sed "s/^/[${m:-causal}] /"
            done
        done
    done
    timeout 240 python3 dev/flex_masks.py 2>&1 | tail -9
}

stage_peers() {
    header "PyTorch attention peers (dev/sdpa_peers.py)"
    timeout 300 python3 dev/sdpa_peers.py 1024 4096 16384 D=${PEER_D:-64} 2>&1 | tail -40
}

stage_ctypes() {
    header "libattention from Python (dev/attention_ctypes.py)"
    make -s -j16 GPU_ARCH=90 libattention >"$OUT/libattention.log" 2>&1 || { tail -10 "$OUT/libattention.log"; return; }
    PYTHONUNBUFFERED=1 timeout 200 python3 dev/attention_ctypes.py build/libattention.so 2>&1 | tail -30
}

stage_gpt2() {
    table_header "GPT-2 124M, vocab 50257, T=1024, bf16 ($(date -u +%F), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
    for attn in ${ATTNS:-naive flash}; do
        for B in 16 32 64; do
            train "gpt2-$attn-B$B-graph" --model gpt2 --vocab 50257 --seq-len 1024 --batch $B --attn $attn
        done
        train "gpt2-$attn-B16-nograph" --model gpt2 --vocab 50257 --seq-len 1024 --batch 16 --attn $attn --no-cuda-graph
    done
}

stage_sizes() {
    table_header "GPT-2 medium and large, vocab 50257, T=1024, bf16"
    for attn in naive flash; do
        train "gpt2-medium-$attn-B16" --model gpt2-medium --vocab 50257 --seq-len 1024 --batch 16 --attn $attn
        train "gpt2-large-$attn-B16" --model gpt2-large --vocab 50257 --seq-len 1024 --batch 16 --attn $attn
    done
}

stage_bytes() {
    table_header "byte-level GPT-2 small (vocab 256), 32768 tokens a step, bf16"
    for T in 1024 4096 8192; do
        B=$((32768 / T))
        for attn in ${ATTNS:-naive memeff flash}; do
            train "bytes-T$T-$attn" --model gpt2 --seq-len $T --batch $B --attn $attn
        done
    done
}

stage_grids() {
    header "bench grids"
    timeout 200 ./train_gpt2 --data "$DATA" --bench xformers-issue --bench-out "$OUT/xformers-issue" \
        >"$OUT/xformers-issue.log" 2>&1; echo "xformers-issue rc=$?"
    timeout 300 ./train_gpt2 --data "$DATA" --bench flash-blog ${FLASH_BLOG_ARGS:---bench-quick --bench-max-seconds 200} \
        --bench-out "$OUT/flash-blog" >"$OUT/flash-blog.log" 2>&1; echo "flash-blog rc=$?"
    cat "$OUT/xformers-issue/results.md" "$OUT/flash-blog/results.md" 2>/dev/null
}

stage_baseline() {
    [ -f "${BASELINE:-}" ] || { echo "baseline: set BASELINE=local/NAME.tar.gz"; return; }
    header "baseline build ($BASELINE)"
    build_tarball /tmp/baseline "$BASELINE" 16 train_gpt2 || { tail -20 /tmp/baseline/build.log; return; }
    table_header "this build vs $BASELINE, GPT-2 124M, vocab 50257, T=1024, bf16, B=16, flash, CUDA graphs"
    local here=$PWD
    for round in 1 2; do
        train "new-$round" --model gpt2 --vocab 50257 --seq-len 1024 --batch 16 --attn flash ${NEW_ARGS:-}
        (cd /tmp/baseline && DATA=$here/$DATA OUT=$OUT TABLE=$TABLE STEPS=$STEPS bash -c "$(declare -f train); train old-$round --model gpt2 --vocab 50257 --seq-len 1024 --batch 16 --attn flash ${OLD_ARGS:-}")
    done
}

stage_attnbase() {
    # BASELINE: one tarball (tag "old"), or several separated by spaces (tag: each one's file name
    # without .tar.gz), built side by side in /tmp/baseline_N; this build is tagged "new"
    local tars=(${BASELINE:-}) bins=() tags=() i t
    [ ${#tars[@]} -gt 0 ] || { echo "attnbase: set BASELINE=local/NAME.tar.gz (or several)"; return; }
    for t in "${tars[@]}"; do [ -f "$t" ] || { echo "attnbase: no file $t"; return; }; done
    header "attention baseline builds (${tars[*]})"
    local jobs=$(( 16 / ${#tars[@]} )); [ $jobs -ge 2 ] || jobs=2
    for i in "${!tars[@]}"; do
        build_tarball /tmp/baseline_$i "${tars[$i]}" $jobs build/dev/bench_attention &
        bins+=(/tmp/baseline_$i/build/dev/bench_attention)
        if [ ${#tars[@]} -eq 1 ]; then tags+=(old); else t=$(basename "${tars[$i]}"); tags+=("${t%.tar.gz}"); fi
    done
    wait
    for i in "${!tars[@]}"; do
        [ -x "${bins[$i]}" ] || { echo "attnbase: ${tars[$i]} did not build"; tail -20 /tmp/baseline_$i/build.log; return; }
    done
    bins+=(./build/dev/bench_attention); tags+=(new)
    header "bench_attention ${AB_KERNEL:-flash-tma}: ${tags[*]} (new: this build), alternating, fwd / fwd+bwd TFLOP/s"
    local shape
    while IFS= read -r shape; do
        [ -n "$shape" ] || continue
        for round in 1 2; do
            for i in "${!bins[@]}"; do
                timeout 60 ${bins[$i]} ${AB_KERNEL:-flash-tma} $shape 2>&1 | grep -E "^${AB_KERNEL:-flash-tma} |rror" | sed "s/^/[${tags[$i]} $shape] /"
            done
        done
    done <<< "${AB_SHAPES:-T=1024 D=64
T=4096 D=64
T=16384 D=64
T=4096 D=64 none
T=4096 D=128
T=4096 D=128 none
T=4096 D=64 window=1024
T=4096 D=64 docs=2048
T=16384 D=64 alibi}"
}

# gpu_mem_sampler FILE: the largest memory.used (MiB) nvidia-smi reports while it runs, into FILE.
gpu_mem_sampler() {
    local max=0 v
    while :; do
        v=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
        [ "$v" -gt "$max" ] 2>/dev/null && { max=$v; echo "$max" >"$1"; }
        sleep 0.2
    done
}

# sampled NAME LOG CMD...: runs CMD (output into LOG) beside the sampler; prints the peak over the
# idle level in GiB.
sampled() {
    local name=$1 log=$2; shift 2
    local idle; idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    echo "$idle" >"$OUT/$name.mem"
    gpu_mem_sampler "$OUT/$name.mem" &
    local sp=$!
    "$@" >"$log" 2>&1
    kill $sp 2>/dev/null; wait $sp 2>/dev/null
    python3 -c "print(f'{($(cat "$OUT/$name.mem") - $idle) / 1024:.2f}')"
}

stage_llmc() {
    [ -d local/llmc ] || { echo "llmc: no local/llmc (see the stage's comment)"; return; }
    header "llm.c build"
    if [ ! -x local/llmc/train_gpt2cu ]; then
        (cd local/llmc && make train_gpt2cu USE_CUDNN=1 GPU_COMPUTE_CAPABILITY=90 NO_MULTI_GPU=1 \
            NO_USE_MPI=1 >build_device.log 2>&1) || { tail -20 local/llmc/build_device.log; return; }
    fi
    local d=/tmp/llmc_data tb tag tags=()
    for tb in ${LLMC_BUILDS:-}; do
        tag=${tb%%=*}; tb=${tb#*=}
        [ -f "$tb" ] || { echo "llmc: no file $tb"; return; }
        build_tarball /tmp/llmc_build_$tag "$tb" 8 train_gpt2 &
        tags+=("$tag")
    done
    wait
    for tag in "${tags[@]}"; do
        [ -x /tmp/llmc_build_$tag/train_gpt2 ] || { echo "llmc: build $tag failed"; tail -20 /tmp/llmc_build_$tag/build.log; return; }
    done
    mkdir -p $d
    python3 dev/llmc_tokens.py "$DATA" $d/train.bin $d/val.bin || return
    { echo; echo "### llm.c side by side: GPT-2 124M, vocab 50257, T=1024, bf16 ($(date -u +%F), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"; echo
      echo "| run | tokens/sec | ms/step | peak GiB (nvidia-smi, over idle) | own figure |"; echo "|---|---|---|---|---|"; } | tee -a "$TABLE"
    local B round attn mem row
    for B in ${LLMC_BS:-16 64}; do
        for round in $(seq ${LLMC_ROUNDS:-2}); do
            for spec in ${LLMC_OURS:-flash cudnn}; do
                # KERNEL, KERNEL:RECOMPUTE (e.g. flash-tma:none), either with +fp8 (--matmul fp8),
                # then any @FLAG (flash@no-cuda-graph: --no-cuda-graph)
                local full=$spec xflag=""
                if [[ $spec == *@* ]]; then xflag="--${spec#*@}"; xflag=${xflag//@/ --}; spec=${spec%%@*}; fi
                local base=${spec%%+*} rflag=""
                local attn=${base%%:*}
                [ "$base" != "$attn" ] && rflag="--recompute ${base#*:}"
                [ "$spec" != "$base" ] && rflag="$rflag --matmul ${spec#*+}"
                rflag="$rflag $xflag"; spec=$full
                rm -f "$OUT/llmc-ours.jsonl"
                mem=$(sampled ours "$OUT/llmc-ours-${spec//[:@+]/-}-B$B-$round.out" timeout 240 ./train_gpt2 --data $d/train.bin --steps "$STEPS" --warmup 2 \
                    --val-every 0 --val-batches 1 --sample-len 0 --quiet --log "$OUT/llmc-ours.jsonl" \
                    --model gpt2 --vocab 50257 --seq-len 1024 --batch $B --attn $attn $rflag ${OURS_ARGS:-})
                row=$(python3 dev/llmc_tokens.py --row-ours "$OUT/llmc-ours.jsonl" "$mem")
                echo "| ours $spec B=$B #$round $row" | tee -a "$TABLE"
            done
            for tag in "${tags[@]}"; do
                rm -f "$OUT/llmc-ours.jsonl"
                mem=$(sampled ours "$OUT/llmc-build-$tag-B$B-$round.out" timeout 240 /tmp/llmc_build_$tag/train_gpt2 --data $d/train.bin \
                    --steps "$STEPS" --warmup 2 --val-every 0 --val-batches 1 --sample-len 0 --quiet --log "$OUT/llmc-ours.jsonl" \
                    --model gpt2 --vocab 50257 --seq-len 1024 --batch $B --attn flash ${OURS_ARGS:-})
                row=$(python3 dev/llmc_tokens.py --row-ours "$OUT/llmc-ours.jsonl" "$mem")
                echo "| build $tag flash B=$B #$round $row" | tee -a "$TABLE"
            done
            mem=$(sampled llmc "$OUT/llmc-B$B-$round.out" timeout 240 local/llmc/train_gpt2cu -i $d/train.bin -j $d/val.bin -e d12 \
                -b $B -t 1024 -d $((B * 1024)) -x "$STEPS" -v 100000 -s 100000 -r 1)
            row=$(python3 dev/llmc_tokens.py --row-llmc "$OUT/llmc-B$B-$round.out" "$mem" $B)
            echo "| llm.c B=$B #$round $row" | tee -a "$TABLE"
        done
    done
}

# peer NAME ARGS...: one dev/torch_gpt2_bench.py run beside the memory sampler; a table row.
peer() {
    local name=$1; shift
    local mem; mem=$(sampled "$name" "$OUT/$name.out" timeout 300 python3 dev/torch_gpt2_bench.py "$@")
    echo "| $name | $(grep -o '[0-9.]*K tok/s' "$OUT/$name.out" || echo failed) | $mem | $(grep -o 'failed.*' "$OUT/$name.out" | cut -c1-80) |" | tee -a "$TABLE"
}
# ours NAME ARGS...: this trainer beside the sampler (on random-free enwik8 bytes); a table row.
ours() {
    local name=$1; shift
    rm -f "$OUT/$name.jsonl"
    local mem; mem=$(sampled "$name" "$OUT/$name.out" timeout 300 ./train_gpt2 --data "$DATA" --steps "$STEPS" \
        --warmup 2 --val-every 0 --val-batches 1 --sample-len 0 --quiet --log "$OUT/$name.jsonl" "$@")
    echo "| $name | $(python3 dev/llmc_tokens.py --row-ours "$OUT/$name.jsonl" "$mem" | cut -d'|' -f2) | $mem | |" | tee -a "$TABLE"
}

stage_kernels() {
    header "kernels (ncu)"
    local d=/tmp/llmc_data
    mkdir -p $d
    python3 dev/llmc_tokens.py "$DATA" $d/train.bin $d/val.bin || return
    timeout 400 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
        ./train_gpt2 --data $d/train.bin --steps 3 --warmup 2 --val-every 0 --val-batches 1 \
        --sample-len 0 --quiet --no-cuda-graph --model gpt2 --vocab 50257 --seq-len 1024 --batch 16 \
        ${KERNELS_ARGS:---attn flash} >"$OUT/kernels.csv" 2>"$OUT/kernels.err"
    { echo; echo "### kernels of one step: ${KERNELS_ARGS:---attn flash}"; echo
      python3 dev/kernel_times.py "$OUT/kernels.csv"; } | tee -a "$TABLE"
}

stage_trace() {
    header "trace (CUPTI): the time between kernels"
    make -s GPU_ARCH=90 build/dev/libcupti_trace.so >"$OUT/trace_build.log" 2>&1 || { tail -10 "$OUT/trace_build.log"; return; }
    local d=/tmp/llmc_data mode
    mkdir -p $d
    python3 dev/llmc_tokens.py "$DATA" $d/train.bin $d/val.bin || return
    for mode in graph no-cuda-graph; do
        local flag=""; [ $mode = graph ] || flag=--$mode
        rm -f "$OUT/trace-$mode.jsonl" "$OUT/untraced-$mode.jsonl"
        timeout 240 ./train_gpt2 --data $d/train.bin --steps 12 --warmup 2 --val-every 0 --val-batches 1 --sample-len 0 \
            --quiet --log "$OUT/untraced-$mode.jsonl" --model gpt2 --vocab 50257 --seq-len 1024 --batch 16 \
            ${TRACE_ARGS:---attn flash} $flag >/dev/null 2>&1
        CUDA_INJECTION64_PATH=$PWD/build/dev/libcupti_trace.so CUPTI_TRACE_OUT=/tmp/trace-$mode.csv timeout 240 \
            ./train_gpt2 --data $d/train.bin --steps 12 --warmup 2 --val-every 0 --val-batches 1 --sample-len 0 \
            --quiet --log "$OUT/trace-$mode.jsonl" --model gpt2 --vocab 50257 --seq-len 1024 --batch 16 \
            ${TRACE_ARGS:---attn flash} $flag >"$OUT/trace-$mode.out" 2>&1
        local rc=$?
        { echo; echo "### trace, ${TRACE_ARGS:---attn flash} $flag (rc $rc; traced run: $(python3 dev/llmc_tokens.py --row-ours "$OUT/trace-$mode.jsonl" 0 | cut -d'|' -f2-3); untraced: $(python3 dev/llmc_tokens.py --row-ours "$OUT/untraced-$mode.jsonl" 0 | cut -d'|' -f2-3))"; echo
          python3 dev/trace_gaps.py /tmp/trace-$mode.csv; } 2>&1 | tee -a "$TABLE"
        gzip -c /tmp/trace-$mode.csv >"$OUT/trace-$mode.csv.gz"
    done
}

stage_gemms() {
    header "gemms (every cuBLASLt heuristic)"
    make -j16 GPU_ARCH=90 build/dev/bench_matmul_algos >"$OUT/gemms_build.log" 2>&1 || { tail -20 "$OUT/gemms_build.log"; return; }
    timeout 300 build/dev/bench_matmul_algos ${GEMM_NS:-16384 65536} 2>&1 | tee "$OUT/gemms.txt"
}

stage_torchgpt() {
    { echo; echo "### PyTorch eager peers in training ($(date -u +%F)): tokens/sec, peak GiB (nvidia-smi, over idle)"; echo
      echo "| run | tokens/sec | peak GiB | note |"; echo "|---|---|---|---|"; } | tee -a "$TABLE"
    local x="--layers 6 --channels 1024 --heads 8 --vocab 256 --seq-len 2048 --batch 2"
    for m in ${XF_MASKS-causal none dense}; do
        peer "torch-xf-fp32-$m-efficient" $x --accum 4 --precision fp32 --backend efficient --mask $m
        ours "ours-xf-fp32-$m-memeff" $x --grad-accum 4 --precision fp32 --attn memeff --mask $m
    done
    if [ -n "${XF_MASKS-x}" ]; then
        peer "torch-xf-bf16-dense-efficient" $x --accum 4 --precision bf16 --backend efficient --mask dense
        ours "ours-xf-bf16-dense-memeff" $x --grad-accum 4 --precision bf16 --attn memeff --mask dense
    fi
    for T in ${LONG_TS-16384 32768 65536}; do
        peer "torch-long-T$T-cudnn" --seq-len $T --batch 1 --precision bf16 --backend cudnn --steps 8
        for attn in ${LONG_ATTNS:-flash flash-tma}; do
            ours "ours-long-T$T-$attn" --model gpt2 --max-seq-len $T --seq-len $T --batch 1 --attn $attn
        done
    done
}

for stage in "$@"; do
    case "$stage" in
        build|tests|attention|masks|peers|ctypes|gpt2|sizes|bytes|grids|attnbase|baseline|llmc|kernels|trace|gemms|torchgpt) "stage_$stage" ;;
        *) echo "unknown stage $stage"; exit 2 ;;
    esac
done
[ -f "$TABLE" ] && { echo; echo "== table"; cat "$TABLE"; }
exit 0
