# mk/layers_cpu.mk: build flags for the CPU layers (layers/*.c).
# -fno-math-errno lets gcc vectorise sqrtf (AdamW) instead of calling libm for the errno
# side effect, which nothing here reads; no other floating-point semantics change.
$(BUILD)/layers/%.o: CFLAGS += -fno-math-errno
