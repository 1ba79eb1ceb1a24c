/* data/embedded_corpus.S: the default training corpus, linked into the binary.
 *
 * build/corpus.txt (the project's README files and sources, concatenated by the Makefile) is
 * included byte for byte as read-only data between the symbols embedded_corpus_start and
 * embedded_corpus_end; dataset_embedded() in data/dataset.c serves it as a byte dataset.
 * A NUL follows the end (outside the range) so the text can also be read as a C string.
 * Assembled with -Ibuild, which is where .incbin finds corpus.txt.
 */
    .section .rodata
    .balign 64
    .globl embedded_corpus_start
    .type embedded_corpus_start, @object
embedded_corpus_start:
    .incbin "corpus.txt"
    .globl embedded_corpus_end
    .type embedded_corpus_end, @object
embedded_corpus_end:
    .byte 0
    .size embedded_corpus_start, embedded_corpus_end - embedded_corpus_start
    .size embedded_corpus_end, 1

    .section .note.GNU-stack,"",@progbits
