/* msbnb — bitsandbytes-class weight quantization and QLoRA fine-tuning in C.
 * Umbrella header: includes the whole public API. */
#ifndef MSBNB_H
#define MSBNB_H
#include "msbnb/core.h"
#include "msbnb/quant.h"
#include "msbnb/linear.h"
#include "msbnb/params.h"
#include "msbnb/optim.h"
#include "msbnb/lora.h"
#include "msbnb/safetensors.h"
#include "msbnb/qconfig.h"
#include "msbnb/convert.h"
#include "msbnb/cuda.h"
#endif
