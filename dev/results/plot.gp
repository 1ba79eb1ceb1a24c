# dev/results/plot.gp: the README's charts from the measured tables beside it (`gnuplot plot.gp`).
set terminal pngcairo noenhanced size 900,360 font "sans,10"
set grid
set logscale x 2
set key bottom left
set xlabel "context length (tokens)"

set output "flash_blog_tokens_per_sec.png"
set multiplot layout 1,3 title "flash-blog grid: training tokens/sec, batch raised until memory is full (H100, bf16)"
do for [i=0:2] {
    set title word("gpt2 gpt2-medium gpt2-large", i+1)
    set ylabel "tokens/sec"
    set yrange [0:*]
    plot "flash_blog_h100.dat" index i using 1:2 with linespoints lw 2 pt 7 title "naive", \
         "" index i using 1:3 with linespoints lw 2 pt 9 title "memeff", \
         "" index i using 1:4 with linespoints lw 2 pt 5 title "flash (mma.sync)", \
         "flash_blog_h100_hopper.dat" index i using 1:2 with linespoints lw 2 dt 2 pt 4 title "flash (Hopper wgmma)"
}
unset multiplot

set terminal pngcairo noenhanced size 900,360 font "sans,10"
set output "bytes_memory_and_speed.png"
set multiplot layout 1,2 title "byte-level GPT-2 small, 32768 tokens a step (H100, bf16); naive is out of memory at 8192"
set title "tokens/sec"
set ylabel "tokens/sec"
set yrange [0:*]
plot "bytes_h100.dat" index 0 using 1:2 with linespoints lw 2 pt 7 title "naive", \
     "" index 1 using 1:2 with linespoints lw 2 pt 9 title "memeff", \
     "" index 2 using 1:2 with linespoints lw 2 pt 5 title "flash"
set title "peak memory held"
set key top left
set ylabel "GiB"
plot "bytes_h100.dat" index 0 using 1:3 with linespoints lw 2 pt 7 title "naive", \
     "" index 1 using 1:3 with linespoints lw 2 pt 9 title "memeff", \
     "" index 2 using 1:3 with linespoints lw 2 pt 5 title "flash"
unset multiplot
