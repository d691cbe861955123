// torchrun's environment: a single process without it, every variable checked with it.
#include <gtest/gtest.h>

#include <map>

#include "dist/launch_env.h"

namespace mosaic::dist {
namespace {

StatusOr<LaunchEnv> Parse(const std::map<std::string, std::string>& vars) {
  return ParseLaunchEnv([&](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

const std::map<std::string, std::string> kTwoRanks = {{"WORLD_SIZE", "2"},
                                                      {"RANK", "1"},
                                                      {"LOCAL_RANK", "1"},
                                                      {"MASTER_ADDR", "127.0.0.1"},
                                                      {"MASTER_PORT", "29511"}};

TEST(LaunchEnv, NoWorldSizeIsOneProcess) {
  auto env = Parse({});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_FALSE(env->distributed());
  EXPECT_EQ(env->rank, 0);
  auto one = Parse({{"WORLD_SIZE", "1"}});
  ASSERT_TRUE(one.ok());
  EXPECT_FALSE(one->distributed());
}

TEST(LaunchEnv, TorchrunVariables) {
  auto env = Parse(kTwoRanks);
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_TRUE(env->distributed());
  EXPECT_EQ(env->world_size, 2);
  EXPECT_EQ(env->rank, 1);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->master_addr, "127.0.0.1");
  EXPECT_EQ(env->master_port, 29511);
}

TEST(LaunchEnv, TorchrunAgentStore) {
  EXPECT_FALSE(Parse(kTwoRanks)->agent_store);
  auto vars = kTwoRanks;
  vars["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  vars["TORCHELASTIC_RESTART_COUNT"] = "3";
  auto env = Parse(vars);
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_TRUE(env->agent_store);
  EXPECT_EQ(env->restart_count, 3);
}

TEST(LaunchEnv, LocalRankDefaultsToRank) {
  auto vars = kTwoRanks;
  vars.erase("LOCAL_RANK");
  auto env = Parse(vars);
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->local_rank, 1);
}

TEST(LaunchEnv, BadValuesNameTheVariable) {
  struct Case {
    std::string var, value;
  };
  for (const Case& c :
       {Case{"WORLD_SIZE", "two"}, Case{"WORLD_SIZE", "0"}, Case{"RANK", "2"}, Case{"RANK", "-1"},
        Case{"MASTER_PORT", "70000"}, Case{"MASTER_PORT", "12x"}, Case{"LOCAL_RANK", "5"}}) {
    auto vars = kTwoRanks;
    vars[c.var] = c.value;
    auto env = Parse(vars);
    ASSERT_FALSE(env.ok()) << c.var << "=" << c.value;
    EXPECT_EQ(env.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(env.status().message().find(c.var + "='" + c.value + "'"), std::string::npos)
        << env.status().message();
  }
}

TEST(LaunchEnv, MissingVariableInAMultiRankRun) {
  for (const char* missing : {"RANK", "MASTER_ADDR", "MASTER_PORT"}) {
    auto vars = kTwoRanks;
    vars.erase(missing);
    auto env = Parse(vars);
    ASSERT_FALSE(env.ok()) << missing;
    EXPECT_NE(env.status().message().find(missing), std::string::npos) << env.status().message();
    EXPECT_NE(env.status().message().find("torchrun"), std::string::npos);
  }
}

}  // namespace
}  // namespace mosaic::dist
