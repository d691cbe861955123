// Joining a data-parallel run from code that does not include torch (the `mosaic` binary's
// command files): the Context stays opaque behind a shared_ptr.
//
//   MOSAIC_ASSIGN_OR_RETURN(LaunchEnv env, ReadLaunchEnv());
//   if (env.distributed()) {
//     MOSAIC_ASSIGN_OR_RETURN(std::shared_ptr<Context> ctx, ConnectToRun(env, "cpu", 300));
//     options.dist = ctx.get();
//   }
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "dist/launch_env.h"

namespace mosaic::dist {

class Context;

// Context::Connect on `device` ("cpu", "cuda" = cuda:LOCAL_RANK, or "cuda:N") with a timeout of
// timeout_s seconds (Note [bounded waits] in process_group.h).
StatusOr<std::shared_ptr<Context>> ConnectToRun(const LaunchEnv& env, const std::string& device,
                                                double timeout_s);

}  // namespace mosaic::dist
