/* tools/streamml/cmds.h: the subcommands of the `streamml` binary.
 * Each takes the argv after the subcommand name (argv[0] = its name) and
 * returns the process exit code: 0 ok, 1 runtime failure, 2 usage/config. */
#ifndef STREAMML_CMDS_H
#define STREAMML_CMDS_H

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

int cmd_broker(int argc, char **argv);    /* cmd_broker.c */
int cmd_produce(int argc, char **argv);   /* cmd_io.c */
int cmd_consume(int argc, char **argv);   /* cmd_io.c */
int cmd_featurize(int argc, char **argv); /* cmd_featurize.c */
int cmd_features(int argc, char **argv);  /* cmd_features.c: `features check SPEC` */
int cmd_predict(int argc, char **argv);   /* cmd_predict.c */
int cmd_model(int argc, char **argv);     /* cmd_predict.c: `model inspect FILE` */
int cmd_config(int argc, char **argv);    /* cmd_config.c: `config show|check` */
int cmd_replay(int argc, char **argv);    /* cmd_replay.c */
int cmd_report(int argc, char **argv);    /* cmd_report.c */
int cmd_profile(int argc, char **argv);   /* cmd_profile.c: monitoring baseline */
int cmd_alerts(int argc, char **argv);    /* cmd_alerts.c: follow the monitoring topic */
int cmd_click_eval(int argc, char **argv); /* cmd_clickeval.c: clickstream offline quality */
int cmd_abtest(int argc, char **argv);    /* cmd_abtest.c: champion/challenger analysis */
int cmd_baseline(int argc, char **argv);  /* cmd_baseline.c: clickstream/images baselines */
int cmd_quality(int argc, char **argv);   /* cmd_quality.c: image quality limits */
int cmd_ensemble(int argc, char **argv);  /* cmd_ensemble.c: images graded by a model set */

/* cmd_predict_onnx.c: predict and model inspect for .onnx files */
int cmd_is_onnx(const char *path);                /* path ends in .onnx */
const char *cmd_model_arg(int argc, char **argv); /* --model value, before getopt */
int cmd_predict_onnx(int argc, char **argv);
int cmd_model_inspect_onnx(const char *path);

#endif
