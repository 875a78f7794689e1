@echo off
rem Cinescribe launcher for Windows.
rem
rem First run: creates .venv, installs the PyTorch build that suits this machine's GPU and
rem driver (chosen by scripts\torch_build.py), checks that it really runs on the GPU, then
rem installs requirements.txt. Every run: starts "python app.py [flags]" and starts it again
rem whenever it exits with code 42 (the app's "restart me"). Set-up output: logs\setup.log.
rem
rem Usage: start.bat [launcher options] [app flags...]      (start.bat --help-launcher)
rem
rem cmd notes for whoever edits this file (tests\test_launchers_wine.py runs it under Wine):
rem  * no variable that may hold user text (paths, messages) is expanded inside a ( ) block;
rem    the flow uses goto, and messages are printed with delayed expansion in :say_var only;
rem  * exit codes are tested with "if %ERRORLEVEL% NEQ 0" on the line right after the command:
rem    "if errorlevel 1" misses crashes, whose Windows exit codes are negative (0xC0000005);
rem  * no "&&" / "||" (Wine's cmd gets them wrong, so the tests could not check them);
rem  * %~dp0 is read before any SHIFT (SHIFT changes %0);
rem  * this file must keep CRLF line endings (.gitattributes), or labels break.

setlocal EnableExtensions DisableDelayedExpansion
rem A variable named ERRORLEVEL would hide the real exit code from %ERRORLEVEL%.
set "ERRORLEVEL="
rem pushd, not cd /d: it also works when the folder is a network path (\\server\share\...).
pushd "%~dp0" 2>nul
if not exist "scripts\torch_build.py" goto :no_root

rem Where the Python environment lives: .venv here, or CINESCRIBE_VENV (made absolute).
set "VENV=%CD%\.venv"
if defined CINESCRIBE_VENV for %%I in ("%CINESCRIBE_VENV%") do set "VENV=%%~fI"
rem No trailing backslash: in "C:\venv\" the C runtime takes \" for a quote and mangles the arguments.
if "%VENV:~-1%"=="\" set "VENV=%VENV:~0,-1%"
set "VENV_PY=%VENV%\Scripts\python.exe"
set "HELPER=scripts\torch_build.py"
set "PLAN=%VENV%\cinescribe-plan.env"
set "CONSTRAINTS=%VENV%\cinescribe-constraints.txt"
set "HF_MARKER=%VENV%\cinescribe-hf-symlinks.txt"
set "LOG=%CD%\logs\setup.log"
set "CINESCRIBE_LAUNCHER=1"
set "PYTHONUTF8=1"
set "PIP_DISABLE_PIP_VERSION_CHECK=1"
set "PIP_NO_INPUT=1"
rem Explained once by scripts\torch_build.py hf-symlinks (below), so not on every download.
if not defined HF_HUB_DISABLE_SYMLINKS_WARNING set "HF_HUB_DISABLE_SYMLINKS_WARNING=1"

rem ---------------------------------------------------------------------------------------
rem Launcher options. The app's arguments are collected in APP_ARGS; when no launcher option
rem was given, the app gets %* untouched instead (cmd splits %1..%9 at "=" "," ";").
rem ---------------------------------------------------------------------------------------
set "OPT_CPU=0"
set "OPT_UPDATE=0"
set "OPT_REINSTALL=0"
set "OPT_EXTRAS=0"
set "HAVE_LAUNCHER_OPTS=0"
set "APP_ARGS="

:parse_args
if "%~1"=="" if [%1]==[] goto :args_done
if /i "%~1"=="--cpu" (set "OPT_CPU=1" & goto :launcher_arg)
if /i "%~1"=="--update" (set "OPT_UPDATE=1" & goto :launcher_arg)
if /i "%~1"=="--reinstall" (set "OPT_REINSTALL=1" & goto :launcher_arg)
if /i "%~1"=="--extras" (set "OPT_EXTRAS=1" & goto :launcher_arg)
if /i "%~1"=="--help-launcher" goto :usage
if "%~1"=="--" (set "HAVE_LAUNCHER_OPTS=1" & shift & goto :rest_args)
set APP_ARGS=%APP_ARGS% %1
shift
goto :parse_args

:launcher_arg
set "HAVE_LAUNCHER_OPTS=1"
shift
goto :parse_args

:rest_args
if "%~1"=="" if [%1]==[] goto :args_done
set APP_ARGS=%APP_ARGS% %1
shift
goto :rest_args

:args_done
if not exist "logs\" mkdir "logs" 2>nul
if not exist "logs\" goto :no_logs
>>"%LOG%" echo.
>>"%LOG%" echo === %DATE% %TIME% start.bat

rem Spaces or brackets in the environment's path break some packages' build and compile steps
rem (triton's compiler among them): warn early, and suggest a plain path for the environment.
set "PATH_CHECK=%VENV%"
if not "%PATH_CHECK: =%"=="%PATH_CHECK%" goto :warn_path
if not "%PATH_CHECK:(=%"=="%PATH_CHECK%" goto :warn_path
if not "%PATH_CHECK:)=%"=="%PATH_CHECK%" goto :warn_path
if not "%PATH_CHECK:[=%"=="%PATH_CHECK%" goto :warn_path
if not "%PATH_CHECK:]=%"=="%PATH_CHECK%" goto :warn_path
goto :path_checked
:warn_path
set "PATH_NOTE=The Python environment's path contains spaces or brackets: %VENV%"
call :warn_var PATH_NOTE
call :warn_text "Some packages fail in such paths. If set-up or the app fails, keep Cinescribe here but put its environment in a plain path:"
call :warn_text "   set CINESCRIBE_VENV=C:\cinescribe-venv   then start start.bat again (or move Cinescribe to C:\cinescribe)."
:path_checked

rem ---------------------------------------------------------------------------------------
rem The virtual environment
rem ---------------------------------------------------------------------------------------
if not "%OPT_REINSTALL%"=="1" goto :reinstall_done
if not exist "%VENV%\" goto :reinstall_done
if not exist "%VENV%\pyvenv.cfg" goto :not_a_venv
set "SAY_TEXT=--reinstall: deleting %VENV%"
call :say_var "" SAY_TEXT
rmdir /s /q "%VENV%"
if exist "%VENV%\" goto :venv_locked
:reinstall_done

set "FRESH_VENV=0"
if exist "%VENV_PY%" goto :venv_ready
call :find_python
if not defined PY_EXE goto :fail_end
set "SAY_TEXT=Creating the Python environment %VENV% with %PY_EXE%"
call :say_var "" SAY_TEXT
set "VENV_EXISTED=0"
if exist "%VENV%\" set "VENV_EXISTED=1"
"%PY_EXE%" -m venv "%VENV%" >>"%LOG%" 2>&1
if %ERRORLEVEL% NEQ 0 goto :venv_failed
set "FRESH_VENV=1"
:venv_ready
call :python_ok "%VENV_PY%"
if %ERRORLEVEL% NEQ 0 goto :venv_bad

rem ---------------------------------------------------------------------------------------
rem What to install (scripts\torch_build.py decides; it runs nvidia-smi only when needed)
rem ---------------------------------------------------------------------------------------
set "PLAN_FLAGS="
if "%OPT_CPU%"=="1" set "PLAN_FLAGS=%PLAN_FLAGS% --cpu"
if "%OPT_UPDATE%"=="1" set "PLAN_FLAGS=%PLAN_FLAGS% --update"
"%VENV_PY%" "%HELPER%" plan --venv "%VENV%" --requirements requirements.txt --platform win32 --out "%PLAN%"%PLAN_FLAGS%
if %ERRORLEVEL% NEQ 0 goto :plan_failed
for %%K in (NEED_TORCH UNINSTALL INSTALLED_TORCH VERIFY NEED_REQS VARIANT CUDA INDEX_URL PIP_ARGS REASON WARNING NOTE) do set "TB_%%K="
for /f "usebackq tokens=1,* delims==" %%A in ("%PLAN%") do set "TB_%%A=%%B"
if defined TB_NOTE call :say_var "" TB_NOTE

set "NEED_PIP=0"
if "%TB_NEED_TORCH%"=="1" set "NEED_PIP=1"
if "%TB_NEED_REQS%"=="1" set "NEED_PIP=1"
if "%OPT_EXTRAS%"=="1" set "NEED_PIP=1"
if not "%NEED_PIP%"=="1" goto :pip_ready
"%VENV_PY%" -m pip --version >nul 2>&1
if %ERRORLEVEL% EQU 0 goto :pip_present
call :say "pip is missing in the Python environment; bootstrapping it"
"%VENV_PY%" -m ensurepip --upgrade >>"%LOG%" 2>&1
if %ERRORLEVEL% NEQ 0 goto :pip_failed
:pip_present
if not "%FRESH_VENV%"=="1" goto :pip_ready
call :say "Upgrading pip"
"%VENV_PY%" -m pip install --log "%LOG%" --upgrade pip
if %ERRORLEVEL% NEQ 0 call :warn_text "Could not upgrade pip; going on with the bundled one."
:pip_ready

rem ---------------------------------------------------------------------------------------
rem PyTorch first, from the chosen index, so requirements.txt's torch>=2.4 is already met
rem ---------------------------------------------------------------------------------------
if not "%TB_NEED_TORCH%"=="1" goto :torch_done
call :say_var "PyTorch build: " TB_REASON
if defined TB_WARNING call :warn_var TB_WARNING
if not "%TB_UNINSTALL%"=="1" goto :torch_install
call :say_var "Removing torch first: " TB_INSTALLED_TORCH
"%VENV_PY%" -m pip uninstall --log "%LOG%" -y torch torchvision torchaudio
if %ERRORLEVEL% NEQ 0 call :warn_text "pip uninstall failed; installing over it."
:torch_install
call :say_var "Installing PyTorch: pip install " TB_PIP_ARGS
call :say "(a download of up to 3 GB; see logs\setup.log for details)"
"%VENV_PY%" -m pip install --log "%LOG%" %TB_PIP_ARGS%
if %ERRORLEVEL% EQU 0 goto :torch_done
rem PyTorch's index (or the mirror in CINESCRIBE_TORCH_INDEX) failed: torch from the index pip is
rem configured with (PyPI or its mirror); torch_build.py says in one line what build that is.
if not defined TB_INDEX_URL goto :torch_failed
"%VENV_PY%" "%HELPER%" fallback --plan "%PLAN%.json" --platform win32 --out "%PLAN%.fallback"
if %ERRORLEVEL% NEQ 0 goto :torch_failed
for %%K in (VARIANT LINE PIP_ARGS) do set "TB_FB_%%K="
for /f "usebackq tokens=1,* delims==" %%A in ("%PLAN%.fallback") do set "TB_FB_%%A=%%B"
call :warn_var TB_FB_LINE
set "TB_VARIANT=%TB_FB_VARIANT%"
set "TB_PIP_ARGS=%TB_FB_PIP_ARGS%"
set "TB_INDEX_URL="
set "TB_VERIFY=1"
call :say_var "Installing PyTorch: pip install " TB_PIP_ARGS
"%VENV_PY%" -m pip install --log "%LOG%" %TB_PIP_ARGS%
if %ERRORLEVEL% NEQ 0 goto :torch_failed
:torch_done

if not "%TB_VERIFY%"=="1" goto :verify_done
call :say "Checking PyTorch"
"%VENV_PY%" "%HELPER%" verify --variant "%TB_VARIANT%" --platform win32 --constraints "%CONSTRAINTS%" --log "%LOG%" --launcher start.bat
if %ERRORLEVEL% NEQ 0 goto :verify_failed
:verify_done

rem ---------------------------------------------------------------------------------------
rem The app's packages (torch pinned by the constraints file, so pip can never swap it)
rem ---------------------------------------------------------------------------------------
if not "%TB_NEED_REQS%"=="1" goto :reqs_done
if not exist "requirements.txt" goto :reqs_missing
set "REQ_UPGRADE="
if "%OPT_UPDATE%"=="1" set "REQ_UPGRADE=--upgrade"
if "%OPT_UPDATE%"=="1" call :say "Upgrading the app's packages (requirements.txt)"
if not "%OPT_UPDATE%"=="1" call :say "Installing the app's packages (requirements.txt)"
"%VENV_PY%" -m pip install --log "%LOG%" -r requirements.txt -c "%CONSTRAINTS%" %REQ_UPGRADE%
if %ERRORLEVEL% NEQ 0 goto :reqs_failed
goto :reqs_done
:reqs_missing
call :warn_text "requirements.txt not found; skipping the app's packages."
:reqs_done

rem Optional accelerators: one at a time, wheels only, torch pinned by the constraints file (so
rem pip can only choose a version made for the installed torch, and can never replace torch).
rem torch_build.py only warns when one fails.
if not "%OPT_EXTRAS%"=="1" goto :extras_done
"%VENV_PY%" "%HELPER%" extras --variant "%TB_VARIANT%" --platform win32 --constraints "%CONSTRAINTS%" --index-url "%TB_INDEX_URL%" --log "%LOG%"
:extras_done

if "%TB_NEED_TORCH%%TB_NEED_REQS%%TB_VERIFY%"=="000" goto :hf_note
"%VENV_PY%" "%HELPER%" write-marker --venv "%VENV%" --plan "%PLAN%.json"
if %ERRORLEVEL% NEQ 0 call :warn_text "Could not record the finished set-up; it will be checked again next time."
call :say "Set-up complete."

:hf_note
rem Once per environment: explain huggingface_hub's symlink warning if this machine gets it.
if exist "%HF_MARKER%" goto :run
"%VENV_PY%" "%HELPER%" hf-symlinks --marker "%HF_MARKER%" --log "%LOG%"

rem ---------------------------------------------------------------------------------------
rem Run the app; exit code 42 means "restart me" (same flags), anything else ends the launcher
rem ---------------------------------------------------------------------------------------
:run
set "VIRTUAL_ENV=%VENV%"
set "PATH=%VENV%\Scripts;%PATH%"
:run_app
if "%HAVE_LAUNCHER_OPTS%"=="1" goto :run_app_rebuilt
"%VENV_PY%" app.py %*
goto :app_exited
:run_app_rebuilt
"%VENV_PY%" app.py %APP_ARGS%
:app_exited
set "APP_CODE=%ERRORLEVEL%"
if "%APP_CODE%"=="42" goto :restart
if "%APP_CODE%"=="0" exit /b 0
echo [cinescribe] The app exited with code %APP_CODE%.
>>"%LOG%" echo [cinescribe] The app exited with code %APP_CODE%.
call :pause_on_error
exit /b %APP_CODE%
:restart
call :say "The app asked for a restart (exit code 42); starting it again."
goto :run_app

rem ---------------------------------------------------------------------------------------
rem Failures: say what went wrong and how to fix it, keep the window open, exit non-zero
rem ---------------------------------------------------------------------------------------
:no_root
echo [cinescribe] ERROR: cannot use the folder of start.bat: "%~dp0"
echo [cinescribe] start.bat must stay in the Cinescribe folder, next to scripts\torch_build.py.
call :pause_on_error
exit /b 1

:no_logs
echo [cinescribe] ERROR: Cannot create the logs folder here; is the Cinescribe folder writable?
call :pause_on_error
exit /b 1

:not_a_venv
set "SAY_TEXT=--reinstall: %VENV% is not a Python environment (no pyvenv.cfg); not deleting it."
call :say_var "ERROR: " SAY_TEXT
call :err "Check CINESCRIBE_VENV, or delete that folder yourself."
goto :fail_end

:venv_locked
call :err "Could not delete the Python environment; close Cinescribe and any program using it, then try again."
goto :fail_end

:venv_failed
call :err "Could not create the Python environment; see logs\setup.log."
call :err "Reinstall Python from python.org with the standard options, or try another Python version."
rem Only what this run created is removed (CINESCRIBE_VENV may name a folder that existed).
if "%VENV_EXISTED%"=="0" if exist "%VENV%\" rmdir /s /q "%VENV%"
goto :fail_end

:venv_bad
call :err "The environment's Python does not run or is not a 64-bit Python 3.11-3.13."
call :err "Rebuild it with: start.bat --reinstall"
goto :fail_end

:plan_failed
call :err "scripts\torch_build.py plan failed; see the messages above."
goto :fail_end

:pip_failed
call :err "Could not install pip into the Python environment; run: start.bat --reinstall"
goto :fail_end

:torch_failed
call :err "Installing PyTorch failed; see the pip messages above and logs\setup.log."
call :err "Check the internet connection and free disk space; behind a proxy: set HTTPS_PROXY=http://host:port"
call :err "If an error mentions a path that is too long, enable long paths in Windows or move Cinescribe to C:\cinescribe."
call :err "Another build can be chosen with --cpu or CINESCRIBE_TORCH_INDEX; see docs\install.md."
goto :fail_end

:verify_failed
call :err "PyTorch does not work as installed; see the messages above. Set-up stopped."
goto :fail_end

:reqs_failed
call :err "Installing requirements.txt failed; see the pip messages above and logs\setup.log."
call :err "If pip reports a conflict with torch, run start.bat --update, or report it."
goto :fail_end

:fail_end
set "SAY_TEXT=Set-up log: %LOG%"
call :say_var "" SAY_TEXT
call :pause_on_error
exit /b 1

rem ---------------------------------------------------------------------------------------
rem Subroutines
rem ---------------------------------------------------------------------------------------

:usage
echo Usage: start.bat [launcher options] [app flags...]
echo.
echo Launcher options, not passed to the app:
echo   --cpu            install the CPU build of PyTorch even if an NVIDIA GPU is present
echo   --update         upgrade the app's packages in place and re-check the PyTorch build
echo   --reinstall      delete the Python environment and set everything up again
echo   --extras         also install optional accelerators (xformers, triton-windows) made for the
echo                    installed torch; a failure is only a warning
echo   --help-launcher  show this help
echo   --               pass everything after it to the app unchanged
echo.
echo Every other argument goes to "python app.py" unchanged, e.g. start.bat --port 7861
echo With launcher options present, write app flags as "--flag value", not "--flag=value".
echo.
echo Environment: CINESCRIBE_PYTHON, CINESCRIBE_VENV, CINESCRIBE_TORCH_INDEX, CINESCRIBE_TORCH_SPEC,
echo CINESCRIBE_EXTRAS, CINESCRIBE_NO_PAUSE. Set-up log: logs\setup.log. More: docs\install.md
exit /b 0

:find_python
rem Sets PY_EXE to the full path of a suitable Python, or prints how to get one.
set "PY_EXE="
if not defined CINESCRIBE_PYTHON goto :find_python_py
call :try_python "%CINESCRIBE_PYTHON%"
if defined PY_EXE exit /b 0
call :err "CINESCRIBE_PYTHON does not point to a 64-bit Python 3.11-3.13."
exit /b 1
:find_python_py
call :try_python py -3.12
if not defined PY_EXE call :try_python py -3.11
if not defined PY_EXE call :try_python py -3.13
if not defined PY_EXE call :try_python python
if defined PY_EXE exit /b 0
call :err "Cinescribe needs a 64-bit Python 3.11, 3.12 or 3.13 (what PyTorch and diffusers both support), and none was found."
call :err "Install Python 3.12 from https://www.python.org/downloads/ and tick 'Add python.exe to PATH',"
call :err "or run: winget install -e --id Python.Python.3.12   then start start.bat again."
where py >nul 2>&1
if %ERRORLEVEL% NEQ 0 exit /b 1
echo [cinescribe] Pythons known to the py launcher:
py -0p
exit /b 1

:try_python
rem %* is an interpreter command such as: py -3.12
%* -c "import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) and sys.maxsize > 2**32 else 1)" >nul 2>&1
if %ERRORLEVEL% NEQ 0 exit /b 1
%* -c "import sys; print(sys.executable)" >"logs\cinescribe-python.txt" 2>nul
set /p PY_EXE=<"logs\cinescribe-python.txt"
del "logs\cinescribe-python.txt" >nul 2>&1
exit /b 0

:python_ok
"%~1" -c "import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) and sys.maxsize > 2**32 else 1)" >nul 2>&1
if %ERRORLEVEL% NEQ 0 exit /b 1
exit /b 0

:say
rem Print and log a literal message given in quotes.
set "SAY_TEXT=%~1"
call :say_var "" SAY_TEXT
exit /b 0

:warn_text
set "SAY_TEXT=%~1"
call :say_var "WARNING: " SAY_TEXT
exit /b 0

:warn_var
call :say_var "WARNING: " %1
exit /b 0

:err
set "SAY_TEXT=%~1"
call :say_var "ERROR: " SAY_TEXT
exit /b 0

:say_var
rem Print and log "prefix + value of the variable named %2". The log is opened out here, where
rem delayed expansion is off: with it on, a "!" in the folder's name would be eaten from the path.
call :echo_var %1 %2
>>"%LOG%" call :echo_var %1 %2
exit /b 0

:echo_var
rem Delayed expansion prints the value without cmd parsing it: ( ) < > & and the like are fine.
setlocal EnableDelayedExpansion
set "SAY_PREFIX=%~1"
echo [cinescribe] !SAY_PREFIX!!%~2!
endlocal
exit /b 0

:pause_on_error
if defined CINESCRIBE_NO_PAUSE exit /b 0
echo.
pause
exit /b 0
