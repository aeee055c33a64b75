/**
 * Registers the stages that need more than stage.ts (libcrypto, liblz4): imported once by each host of the core
 * (worker_host.ts, isolate_host.ts), so that a pipeline spec names them.
 */

import { STAGES } from "./stage.ts";
import { AeadStage, type AeadStageSpec } from "./aead_stage.ts";
import { FilterStage } from "./filter_stage.ts";
import { CompressStage, type CompressStageSpec } from "./compress_stage.ts";

STAGES.aead = (spec, context) => new AeadStage(spec as AeadStageSpec, context);
STAGES.filter = (spec, context) => new FilterStage(spec, context);
STAGES.compress = (spec, context) => new CompressStage(spec as CompressStageSpec, context);
