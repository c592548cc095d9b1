/* A C program built from pagedjit.pc alone (tests/install_test.cmake). */
#include <pagedjit/pagedjit.h>
#include <stdio.h>

int main(void) {
  pagedjit_engine* engine = NULL;
  pagedjit_status st;
  printf("pagedjit %s from C\n", pagedjit_version());
  st = pagedjit_engine_create(0, &engine);
  if (st == PAGEDJIT_OK) {
    printf("engine on GPU 0\n");
    pagedjit_engine_destroy(engine);
  } else {
    printf("no engine (%s): %s\n", pagedjit_status_name(st), pagedjit_last_error());
  }
  return 0;
}
