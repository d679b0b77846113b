# Two commands on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   - install what is missing, then run the demo on its simulated default
#   make test   - install what is missing, then run the whole test suite
PY     ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test install bench clean

demo: install
	$(BIN)/gate demo

test: install
	@# two workers (this machine's two cores), each test file on one worker: its module
	@# fixtures (centrals, PostgreSQL, bus peers) stay together
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=10

install: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/sysdeps.sh
	@scripts/sysdeps.sh "$(PY)"
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (first run takes a minute or two)"
	$(PIP) install --upgrade "pip>=24" "setuptools>=68,<82" wheel
	@# one cv2: the contrib build (WeChat QR CNN) replaces opencv-python-headless; removing the
	@# old one can delete files both wheels share, so the contrib build is repaired if needed
	-$(PIP) uninstall -y opencv-python-headless opencv-python 2>/dev/null
	$(PIP) install -e '.[test]'
	$(BIN)/python -c "import cv2; cv2.wechat_qrcode_WeChatQRCode" 2>/dev/null || \
		$(PIP) install --force-reinstall --no-deps "opencv-contrib-python-headless>=4.9,<5"
	@# face_recognition pins 'dlib', which builds from source for ~12 minutes;
	@# dlib-bin is the same library as a wheel, so face-recognition goes in without its deps.
	$(PIP) install "dlib-bin>=19.24,<21" "face-recognition-models==0.3.0" "Click>=7" "Pillow>=10"
	$(PIP) install --no-deps "face-recognition==1.3.0"
	@touch $(STAMP)

bench: install
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/ledger_import.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
