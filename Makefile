# Every job lives in build.sh so that it also works without make. Honours JAVA_HOME.
.PHONY: all jar test run clean

all: jar

jar:
	./build.sh jar

test:
	./build.sh test

run:
	./build.sh run $(ARGS)

clean:
	./build.sh clean
