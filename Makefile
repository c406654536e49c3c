# Every job lives in build.sh so that it also works without make. Honours JAVA_HOME.
.PHONY: all jar test bench bench-quick run clean

all: jar

jar:
	./build.sh jar

test:
	./build.sh test

bench:
	./build.sh bench

bench-quick:
	./build.sh bench --quick

run:
	./build.sh run $(ARGS)

clean:
	./build.sh clean
