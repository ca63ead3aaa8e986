# Sourced by the device scripts after they put the bundle's lib/ on LD_LIBRARY_PATH. The
# bundle leaves out cuBLAS, cuBLASLt and NCCL (~750 MB, far over what a device call carries);
# they come from the device image, appended after the bundle's own: the toolkit's lib64 and
# PyTorch's nvidia wheels (nvidia/<lib>/lib or nvidia/cu13/lib).
for cuda_lib_dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(python3 -c '
import glob, nvidia
print(" ".join(d for p in nvidia.__path__ for d in glob.glob(p + "/*/lib") + glob.glob(p + "/*/*/lib")))
' 2>/dev/null); do
  [ -d "$cuda_lib_dir" ] && LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cuda_lib_dir
done
export LD_LIBRARY_PATH
unset cuda_lib_dir
